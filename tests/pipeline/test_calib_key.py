"""The build's calibrate step is cached on the config the calibration pass runs with (calibration_key).

Before, the key held the method and the image count only: a build targeting another TensorRT version reused
a calibration.cache whose header named the old one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.tiny_onnx import save_conv_onnx, write_images

from edgeseg.pipeline import int8_steps
from edgeseg.pipeline.options import BuildOptions
from edgeseg.pipeline.step_cache import StepRunner
from edgeseg.trt_cache_format import read_calibration_cache


def test_the_calibrate_step_reruns_for_another_target_tensorrt(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    onnx_path = save_conv_onnx(tmp_path / "build" / "model.onnx")
    out = onnx_path.parent
    frames = tmp_path / "frames"
    write_images(frames, 3)
    options = BuildOptions(calib_method="minmax", calib_images=2)

    def calibrate() -> bool:
        done: dict[str, bool] = {}
        int8_steps.run_calibration_step(StepRunner(out, log=lambda _: None), onnx_path, frames, options, out, done,
                                        None)
        return done["calibrate"]

    monkeypatch.setattr(int8_steps, "target_trt_version", lambda: "10.3.0")
    assert calibrate() is False and calibrate() is True
    header_10 = (out / "calibration.cache").read_bytes().splitlines()[0]
    monkeypatch.setattr(int8_steps, "target_trt_version", lambda: "8.6.1")
    assert calibrate() is False  # stale before: the key left the TensorRT version out
    header_8 = (out / "calibration.cache").read_bytes().splitlines()[0]
    assert header_10 != header_8 and b"8601" in header_8
    assert read_calibration_cache(out / "calibration.cache") is not None
    assert calibrate() is True


def test_the_calibration_key_is_the_pass_config() -> None:
    config = int8_steps.calibrate_config(BuildOptions(calib_method="entropy", calib_images=7))
    key = int8_steps.calibration_key(config)
    assert key["method"] == "entropy" and key["calib_images"] == 7 and key["trt_version"] == config.trt_version
    assert set(key) == set(int8_steps.CALIBRATION_PASS_FIELDS)
    assert "concat_scales" not in key  # the quantize step's option: changing it does not recalibrate
