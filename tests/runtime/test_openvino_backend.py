"""The OpenVINO backend (issue #26): a tiny model through it (FP32 and the Q/DQ file), Segmenter / run / build /
validate / --precision best with it, and the refusal with the install command when openvino is missing.
Only OpenVINO's CPU device is run here; GPU and NPU are untested."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.tiny_onnx import save_conv_onnx, write_images
from helpers.validated_build import SPEC, validated_build

from edgeseg.cli import main
from edgeseg.errors import DependencyError

pytest.importorskip("onnxruntime")


def _openvino():
    return pytest.importorskip("openvino")  # skipped ONLY when openvino cannot be imported


def test_tiny_model_matches_onnxruntime(tmp_path: Path) -> None:
    _openvino()
    from edgeseg.runtime.openvino_backend import CACHE_DIR_NAME, open_openvino
    from edgeseg.runtime.ort_backend import OnnxRuntimeBackend

    x = np.random.default_rng(0).standard_normal((1, 3, SPEC.height, SPEC.width)).astype(np.float32)
    for name, qdq in (("model.onnx", False), ("model.int8.onnx", True)):
        path = save_conv_onnx(tmp_path / name, spec=SPEC, kernel=3, qdq=qdq, metadata=False)
        ov = open_openvino(path, threads=1, folder=tmp_path)
        ort = OnnxRuntimeBackend(path, threads=1)
        try:
            assert ov.name == "openvino" and ov.input_shape == ort.input_shape and ov.output_shape == ort.output_shape
            got, want = ov.infer(x).copy(), ort.infer(x)
            tolerance = 1e-4 if not qdq else 0.1 * float(np.abs(want).max())  # INT8 kernels round differently
            assert np.abs(got - want).max() <= tolerance, (name, np.abs(got - want).max())
            assert (got.argmax(1) == want.argmax(1)).mean() > (0.999 if not qdq else 0.9)
        finally:
            ov.close()
            ort.close()
    assert (tmp_path / CACHE_DIR_NAME).is_dir()  # compiled-model cache inside the build folder


def test_tiny_model_ov_int8_file_runs_on_openvino_as_on_onnxruntime(tmp_path: Path) -> None:
    """model.int8.ov.onnx (7-bit weights, quant/qdq_ov.py): OpenVINO agrees with ONNX Runtime on the same file."""
    _openvino()
    import onnx as onnx_lib
    from helpers.tiny_models import build_tiny_net
    from helpers.tiny_onnx import write_images as images

    from edgeseg.onnx_model import input_spec_of
    from edgeseg.quant.calib_data import CalibrationFeed
    from edgeseg.quant.qdq_ov import write_ov_int8
    from edgeseg.quant.ranges import Ranges, compute_ranges
    from edgeseg.runtime.openvino_backend import open_openvino
    from edgeseg.runtime.ort_backend import OnnxRuntimeBackend

    float_path = build_tiny_net(tmp_path / "model.onnx")
    spec = input_spec_of(onnx_lib.load(str(float_path)))
    frames = images(tmp_path / "frames", 4)[0].parent
    ranges = Ranges("minmax", compute_ranges(float_path, CalibrationFeed(frames, spec, count=4), method="minmax"))
    path = write_ov_int8(onnx_lib.load(str(float_path)), ranges, tmp_path, weight_bits=7)
    ov, ort = open_openvino(path, threads=1, folder=tmp_path), OnnxRuntimeBackend(path, threads=1)
    try:
        # the calibrated frames (random inputs would clip at the activation ranges)
        for batch in CalibrationFeed(frames, spec, count=4):
            x = np.ascontiguousarray(batch[spec.input_name], dtype=np.float32)
            got, want = ov.infer(x).copy(), ort.infer(x)
            # measured: mean |OV - ORT| ~8 % of the largest logit with 8-bit weights as with 7 (OpenVINO computes
            # this net's int8 layers differently from ONNX Runtime's Q/DQ emulation, not a 7-bit effect);
            # argmax identical
            assert np.abs(got - want).mean() <= 0.15 * float(np.abs(want).max()), np.abs(got - want).mean()
            assert (got.argmax(1) == want.argmax(1)).mean() > 0.98
    finally:
        ov.close()
        ort.close()


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    _openvino()
    from edgeseg.errors import ConfigError, InputError
    from edgeseg.runtime.openvino_backend import OpenVinoBackend

    path = save_conv_onnx(tmp_path / "model.onnx", spec=SPEC, metadata=False)
    with pytest.raises(ConfigError, match="no NOSUCH device"):
        OpenVinoBackend(path, device="NOSUCH")
    with pytest.raises(ConfigError, match="inference precision"):
        OpenVinoBackend(path, inference_precision="int4")
    backend = OpenVinoBackend(path)
    with pytest.raises(InputError, match="wrong input"):
        backend.infer(np.zeros((1, 3, 2, 2), np.float32))
    backend.close()


def test_segmenter_and_run_on_openvino(tmp_path: Path) -> None:
    _openvino()
    from edgeseg.runtime.segmenter import Segmenter

    folder = validated_build(tmp_path / "b")
    seg = Segmenter.from_artifacts(folder, backend="openvino", threads=1)
    try:
        assert seg.name == "openvino" and seg.precision == "fp32"
        assert seg(np.zeros((SPEC.height, SPEC.width, 3), np.uint8)).shape == (SPEC.height, SPEC.width)
    finally:
        seg.close()
    write_images(tmp_path / "frames", 2, size=(SPEC.height, SPEC.width))
    result = CliRunner().invoke(main, ["run", "--artifacts", str(folder), "--source", str(tmp_path / "frames"),
                                       "--backend", "openvino", "--device", "CPU"])
    assert result.exit_code == 0, result.output
    assert "openvino" in result.output
    bad = CliRunner().invoke(main, ["run", "--artifacts", str(folder), "--source", str(tmp_path / "frames"),
                                    "--device", "GPU"])
    assert bad.exit_code == 2 and "--device picks OpenVINO's" in bad.output


def test_build_for_openvino_validates_the_qdq_file_on_it_and_run_uses_it(tmp_path: Path) -> None:
    _openvino()
    from edgeseg.runtime.segmenter import Segmenter

    onnx = save_conv_onnx(tmp_path / "b" / "model.onnx", spec=SPEC)
    write_images(tmp_path / "frames", 3, size=(SPEC.height, SPEC.width))
    result = CliRunner().invoke(main, ["build", "--onnx", str(onnx), "--int8", "--backend", "openvino", "--calib",
                                       str(tmp_path / "frames"), "--calib-images", "2", "--threads", "1"])
    assert "Traceback" not in result.output, result.output
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    # OpenVINO's own Q/DQ file (7-bit weights without VNNI/AMX), not TensorRT's model.int8.onnx
    assert manifest["backend"] == "openvino" and manifest["validation"]["candidate_file"] == "model.int8.ov.onnx"
    assert manifest["artifacts"]["onnx_int8_ov"] == "model.int8.ov.onnx"
    assert "validated on openvino" in result.output
    bench = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert {"openvino-fp32", "openvino-int8"} <= {r["name"] for r in bench["runners"]}
    seg = Segmenter.from_artifacts(tmp_path / "b", allow_unvalidated=True)  # auto: the build's runtime
    assert seg.name == "openvino" and seg.model_file.endswith("model.int8.ov.onnx")
    seg.close()


def test_precision_best_times_openvino_candidates_too(tmp_path: Path) -> None:
    _openvino()
    from test_backend_registry import _reference_of

    onnx = save_conv_onnx(tmp_path / "b" / "model.onnx", spec=SPEC)
    _reference_of(tmp_path / "b")  # reference.npz beside the --onnx: every candidate is checked against it
    write_images(tmp_path / "frames", 3, size=(SPEC.height, SPEC.width))
    result = CliRunner().invoke(main, ["build", "--onnx", str(onnx), "--precision", "best", "--calib",
                                       str(tmp_path / "frames"), "--calib-images", "2", "--threads", "1"])
    assert "Traceback" not in result.output, result.output
    selection = json.loads((tmp_path / "b" / "selection.json").read_text())
    rows = selection["candidates"]
    # OpenVINO's INT8 candidate runs its own file (model.int8.ov.onnx), recorded per row
    assert {"model.onnx", "model.int8.ort.onnx", "openvino:model.onnx", "openvino:model.int8.ov.onnx"} <= set(rows)
    assert "openvino:model.int8.onnx" not in rows
    assert rows["openvino:model.int8.ov.onnx"]["file"] == "model.int8.ov.onnx"
    for row in rows.values():  # every candidate: gates and p50
        assert {"passed", "agreement", "p50_ms", "backend", "precision", "file"} <= set(row)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    kept = rows[selection["chosen"]]
    assert manifest["backend"] == kept["backend"] == manifest["build"]["selection"]["backend"]
    assert manifest["validation"]["candidate_file"] == kept["file"] and manifest["precision"] == kept["precision"]
    assert manifest["build"]["runtime"]["backend"] == kept["backend"]


def test_validate_candidate_on_openvino(tmp_path: Path) -> None:
    _openvino()
    folder = validated_build(tmp_path / "b")
    from test_backend_registry import _reference_of

    reference = _reference_of(folder)
    result = CliRunner().invoke(main, ["validate", "--candidate", str(folder / "model.onnx"), "--reference",
                                       str(reference), "--backend", "openvino", "--out", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(main, ["validate", "--candidate", str(folder / "model.onnx"), "--reference",
                                    str(reference), "--inference-precision", "bf16"])
    assert bad.exit_code == 2 and "OpenVINO setting" in bad.output


def test_missing_openvino_is_refused_with_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # as on a machine without it
    from edgeseg.runtime.backend import backend_info, open_backend

    assert not backend_info("openvino").available()
    path = save_conv_onnx(tmp_path / "model.onnx", spec=SPEC, metadata=False)
    with pytest.raises(DependencyError) as caught:
        open_backend("openvino", path)
    assert "pip install 'edgeseg[openvino]'" in str(caught.value)
    folder = validated_build(tmp_path / "b")
    write_images(tmp_path / "frames", 1, size=(SPEC.height, SPEC.width))
    result = CliRunner().invoke(main, ["run", "--artifacts", str(folder), "--source", str(tmp_path / "frames"),
                                       "--backend", "openvino"])
    assert result.exit_code == 1 and "pip install 'edgeseg[openvino]'" in result.output
    assert "Traceback" not in result.output


def test_build_for_openvino_refuses_fp16_before_any_work(tmp_path: Path) -> None:
    _openvino()
    onnx = save_conv_onnx(tmp_path / "b" / "model.onnx", spec=SPEC)
    result = CliRunner().invoke(main, ["build", "--onnx", str(onnx), "--precision", "fp16", "--backend", "openvino"])
    assert result.exit_code == 2 and "--precision best" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["model.onnx"]


def test_auto_does_not_move_an_openvino_build_to_another_runtime_silently(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeseg.fileio import sha256_file
    from edgeseg.manifest import Manifest, ValidationVerdict, write_manifest
    from edgeseg.runtime.segmenter import Segmenter

    folder = tmp_path / "b"
    save_conv_onnx(folder / "model.int8.onnx", spec=SPEC, qdq=True, metadata=False)
    write_manifest(folder, Manifest(model="tiny", num_classes=4, input_spec=SPEC, backend="openvino",
                                    artifacts={"onnx_int8_trt": "model.int8.onnx"},
                                    hashes={"onnx_int8_trt": sha256_file(folder / "model.int8.onnx")},
                                    validation=ValidationVerdict(status="passed", candidate="onnx_int8_trt")))
    monkeypatch.setitem(sys.modules, "openvino", None)  # the robot has no OpenVINO
    with pytest.raises(DependencyError) as caught:
        Segmenter.from_artifacts(folder)
    assert "validated model.int8.onnx on openvino" in str(caught.value)
    assert "pip install 'edgeseg[openvino]'" in str(caught.value) and "--backend onnxruntime" in str(caught.value)
    seg = Segmenter.from_artifacts(folder, backend="onnxruntime")  # asked for by name: runs, on ONNX Runtime
    assert seg.name == "onnxruntime"
    seg.close()


def test_an_openvino_ir_is_run_by_openvino(tmp_path: Path) -> None:
    ov = _openvino()
    from edgeseg.pipeline.artifacts import open_backend
    from edgeseg.runtime.backend import backend_for_file

    onnx = save_conv_onnx(tmp_path / "model.onnx", spec=SPEC, metadata=False)
    xml = tmp_path / "model.xml"
    ov.save_model(ov.Core().read_model(str(onnx)), str(xml))  # e.g. what NNCF's PTQ writes
    assert backend_for_file(xml) == "openvino"
    backend = open_backend(xml, threads=1)  # validate --candidate model.xml takes the same path
    try:
        assert backend.name == "openvino" and backend.output_shape[1] == 4
    finally:
        backend.close()


def test_fallback_is_refused_for_openvino_before_any_work(tmp_path: Path) -> None:
    onnx = save_conv_onnx(tmp_path / "b" / "model.onnx", spec=SPEC)
    result = CliRunner().invoke(main, ["build", "--onnx", str(onnx), "--int8", "--fallback", "auto",
                                       "--backend", "openvino"])
    assert result.exit_code == 2 and "not yet OpenVINO's" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["model.onnx"]
