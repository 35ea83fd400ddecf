"""The build's calibration step on a bag: cached while the bag and topic are unchanged, rerun otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.bags import gradient_frames, write_image_bag
from helpers.tiny_onnx import SPEC, save_conv_onnx

from edgeseg.pipeline import int8_steps
from edgeseg.pipeline.build import BuildOptions
from edgeseg.pipeline.step_cache import StepRunner
from edgeseg.quant.calib_data import BagCalibSource

pytest.importorskip("rosbags")


def test_the_calibration_key_follows_the_bag_and_topic(tmp_path: Path) -> None:
    onnx_path = save_conv_onnx(tmp_path / "build" / "model.onnx")
    out = onnx_path.parent
    frames = gradient_frames(6, SPEC.height, SPEC.width)
    bag = write_image_bag(tmp_path / "rec.mcap", "mcap", frames, extra_image_topics=["/other"])
    options = BuildOptions(calib_method="minmax", calib_images=3)
    runner = StepRunner(out, log=lambda _: None)

    def calibrate(source: BagCalibSource) -> tuple[bool, int8_steps.CalibrationResult]:
        done: dict[str, bool] = {}
        result = int8_steps.run_calibration_step(runner, onnx_path, source, options, out, done, None)
        return done["calibrate"], result

    skipped, result = calibrate(BagCalibSource(bag, "/cam/image_raw"))
    assert not skipped and result.images == 3 and result.folder == f"bag:{bag} (topic /cam/image_raw)"
    assert result.bag is not None and result.bag["topic"] == "/cam/image_raw" and len(result.bag["stamps_ns"]) == 3
    assert calibrate(BagCalibSource(bag, "/cam/image_raw"))[0]  # unchanged: cached
    assert not calibrate(BagCalibSource(bag, "/other"))[0]  # another topic
    bag.unlink()
    write_image_bag(bag, "mcap", frames[::-1], extra_image_topics=["/other"])
    assert not calibrate(BagCalibSource(bag, "/other"))[0]  # another recording under the same name


def test_reference_frames_from_a_bag_are_written_as_pngs(tmp_path: Path) -> None:
    from edgeseg.pipeline.build_data import reference_samples

    bag = write_image_bag(tmp_path / "rec.bag", "ros1", gradient_frames(10, SPEC.height, SPEC.width))
    options = BuildOptions(model="x", calib=BagCalibSource(bag, None), val_images=4)
    images, masks, source = reference_samples(options, SPEC, 4, tmp_path / "out", lambda _: None)
    assert [p.name[:6] for p in images] == ["000000", "000002", "000005", "000007"] and masks == []
    assert all(p.parent == tmp_path / "out" / "calib_bag_frames" and p.suffix == ".png" for p in images)
    assert source.startswith(f"calibration images bag:{bag}")
