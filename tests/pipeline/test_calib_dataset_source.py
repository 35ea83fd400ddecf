"""The build's calibration step on a dataset's images (--calib cityscapes:ROOT): cached while the images are
unchanged, and the reference frames taken from them when there is no --val."""

from __future__ import annotations

from pathlib import Path

from helpers.dataset_layouts import write_cityscapes
from helpers.tiny_onnx import SPEC, save_conv_onnx

from edgeseg.commands._common import CalibType, resolve_calib
from edgeseg.pipeline import int8_steps
from edgeseg.pipeline.build import BuildOptions
from edgeseg.pipeline.step_cache import StepRunner
from edgeseg.quant.calib_data import ImageListSource


def source(text: str) -> ImageListSource:
    resolved = resolve_calib(CalibType().convert(text, None, None), None)
    assert isinstance(resolved, ImageListSource)
    return resolved


def test_the_calibration_key_follows_the_dataset_images(tmp_path: Path) -> None:
    onnx_path = save_conv_onnx(tmp_path / "build" / "model.onnx")
    out = onnx_path.parent
    root = write_cityscapes(tmp_path / "cs", {"train": 3, "val": 2})
    options = BuildOptions(calib_method="minmax", calib_images=2)
    runner = StepRunner(out, log=lambda _: None)

    def calibrate(text: str) -> tuple[bool, int8_steps.CalibrationResult]:
        done: dict[str, bool] = {}
        result = int8_steps.run_calibration_step(runner, onnx_path, source(text), options, out, done, None)
        return done["calibrate"], result

    skipped, result = calibrate(f"cityscapes:{root}")
    assert not skipped and result.images == 2 and result.folder == f"cityscapes:{root}"
    assert calibrate(f"cityscapes:{root}")[0]  # unchanged: cached
    assert not calibrate(f"cityscapes:{root}:val")[0]  # another split
    first = next((root / "leftImg8bit" / "val").rglob("*.png"))
    first.write_bytes((root / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000002_leftImg8bit.png").read_bytes())
    assert not calibrate(f"cityscapes:{root}:val")[0]  # an image changed


def test_reference_frames_come_from_the_dataset_images(tmp_path: Path) -> None:
    from edgeseg.pipeline.build_data import reference_samples

    root = write_cityscapes(tmp_path / "cs", {"train": 4})
    options = BuildOptions(model="x", calib=source(f"cityscapes:{root}:train"), val_images=2)
    images, masks, where = reference_samples(options, SPEC, 4, tmp_path / "out", lambda _: None)
    assert len(images) == 2 and masks == [] and all("_leftImg8bit.png" in p.name for p in images)
    assert where.startswith(f"calibration images cityscapes:{root}:train")
