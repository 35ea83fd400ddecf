"""edgeseg.onnx_model, the one reader/writer of ONNX facts: with onnx, and with only onnxruntime (the robot)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import onnx
import pytest
from helpers.blocked_imports import run_without
from helpers.tiny_onnx import CLASSES, SPEC, conv_model, save_conv_onnx
from onnx import helper

from edgeseg import __version__
from edgeseg.errors import ArtifactError, DependencyError
from edgeseg.onnx_model import (
    OnnxModelInfo,
    decode_metadata,
    export_metadata,
    input_dims,
    input_spec_of,
    load_onnx,
    metadata_of,
    read_metadata,
    read_onnx_metadata,
    read_onnx_model,
    remove_metadata,
    set_metadata,
)
from edgeseg.pipeline.artifacts import candidate_input_spec
from edgeseg.spec import InputSpec


def check_exported_facts(info: OnnxModelInfo) -> None:
    assert info.model == "tiny_net" and info.num_classes == 4 and info.classes == CLASSES
    assert info.input_spec == SPEC and info.require_input_spec() == SPEC
    assert info.edgeseg_version == __version__
    assert [(t.name, t.shape, t.dtype) for t in info.inputs] == [("images", (1, 3, 32, 64), "float32")]
    assert [(t.name, t.shape, t.dtype) for t in info.outputs] == [("logits", (1, 4, 32, 64), "float32")]
    assert info.output_channels == 4


def test_export_metadata_round_trip_with_onnx(tmp_path: Path) -> None:
    info = read_onnx_model(save_conv_onnx(tmp_path / "model.onnx"))
    check_exported_facts(info)
    assert info.reader == "onnx" and info.has_graph and info.path == tmp_path / "model.onnx"
    assert info.opset == 17 and info.has_qdq is False and info.has_fp16 is False
    assert info.node_names == ["conv0"]
    assert set(info.metadata) == {"edgeseg_version", "model", "num_classes", "classes", "input_spec"}
    assert read_metadata(tmp_path / "model.onnx") == info.metadata
    decoded = read_onnx_metadata(info.proto)
    assert decoded["num_classes"] == 4 and decoded["classes"] == CLASSES
    assert InputSpec.from_dict(decoded["input_spec"]) == SPEC
    assert input_spec_of(info.proto) == SPEC and input_dims(info.proto, "images") == [1, 3, 32, 64]


def test_graph_facts(tmp_path: Path) -> None:
    onnx.save(conv_model(qdq=True, opset=13), str(tmp_path / "qdq.onnx"))
    onnx.save(conv_model(fp16=True), str(tmp_path / "half.onnx"))
    qdq, half = read_onnx_model(tmp_path / "qdq.onnx"), read_onnx_model(tmp_path / "half.onnx")
    assert qdq.has_qdq is True and qdq.has_fp16 is False and qdq.opset == 13
    assert qdq.node_names == ["q0", "dq0", "conv0"]
    assert half.has_fp16 is True and half.has_qdq is False
    unnamed = conv_model()
    unnamed.graph.node[0].name = ""
    onnx.save(unnamed, str(tmp_path / "unnamed.onnx"))
    assert read_onnx_model(tmp_path / "unnamed.onnx").node_names == ["Conv_0"]


def test_metadata_fallbacks_and_bad_values(tmp_path: Path) -> None:
    model = conv_model()
    set_metadata(model, {"classes": json.dumps(["a", "b"])})
    onnx.save(model, str(tmp_path / "m.onnx"))
    info = read_onnx_model(tmp_path / "m.onnx")
    assert info.model is None and info.num_classes == 2 and info.input_spec is None  # num_classes from classes
    with pytest.raises(ArtifactError, match="carries no input spec") as caught:
        info.require_input_spec()
    assert caught.value.found == "keys: classes"
    info.metadata.clear()
    assert info.num_classes == 4 and info.classes == []  # from the output channels
    for bad in ("{not json", "[1, 2]", json.dumps({**SPEC.to_dict(), "mean": 5}), json.dumps({"height": 32})):
        info.metadata.update(input_spec=bad, classes="{broken")
        assert info.classes == []
        with pytest.raises(ArtifactError, match="input_spec|input spec"):
            _ = info.input_spec
    with pytest.raises(ValueError):
        decode_metadata({"num_classes": "many"})


def test_set_and_remove_metadata_keep_order() -> None:
    model = conv_model()
    set_metadata(model, {"a": "1", "onnxsim.x": "big", "b": "2"})
    set_metadata(model, {"a": "3", "c": "4"})
    assert list(metadata_of(model).items()) == [("a", "3"), ("onnxsim.x", "big"), ("b", "2"), ("c", "4")]
    remove_metadata(model, prefix="onnxsim.")
    assert list(metadata_of(model)) == ["a", "b", "c"]
    values = export_metadata(model="m", num_classes=2, classes=["x", "y"], input_spec=SPEC)
    assert InputSpec.from_dict(json.loads(values["input_spec"])) == SPEC and values["num_classes"] == "2"


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="ONNX model not found"):
        read_onnx_model(tmp_path / "nope.onnx")
    with pytest.raises(ArtifactError, match="calibration model not found") as caught:
        load_onnx(tmp_path, what="calibration model")
    assert caught.value.found == "a folder"
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ArtifactError, match="corrupt or not an ONNX file"):
        read_onnx_model(tmp_path / "bad.onnx")
    empty = helper.make_model(helper.make_graph([], "empty", [], []))
    onnx.save(empty, str(tmp_path / "empty.onnx"))
    with pytest.raises(ArtifactError, match="empty graph"):
        load_onnx(tmp_path / "empty.onnx")


def test_without_onnx_onnxruntime_reads_the_metadata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_conv_onnx(tmp_path / "model.onnx", qdq=True)
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage" * 10)
    monkeypatch.setitem(sys.modules, "onnx", None)  # the robot install: `import onnx` fails
    info = read_onnx_model(path)
    check_exported_facts(info)
    assert info.reader == "onnxruntime" and not info.has_graph
    assert info.opset is None and info.has_qdq is None and info.has_fp16 is None  # unknown, not "absent"
    assert candidate_input_spec(path) == (SPEC, "model.onnx metadata")
    with pytest.raises(ArtifactError, match="corrupt or not an ONNX file"):
        read_onnx_model(tmp_path / "bad.onnx")
    with pytest.raises(DependencyError, match="onnx is needed for building"):
        read_onnx_model(path, need_graph=True, purpose="building")
    with pytest.raises(DependencyError):
        load_onnx(path)


def test_robot_modules_read_metadata_with_onnx_and_torch_blocked(tmp_path: Path) -> None:
    path = save_conv_onnx(tmp_path / "model.onnx")
    code = f"""
        from edgeseg.pipeline.artifacts import candidate_input_spec
        from edgeseg.onnx_model import read_onnx_model
        info = read_onnx_model({str(path)!r})
        assert info.reader == "onnxruntime" and info.model == "tiny_net" and info.num_classes == 4, info
        assert candidate_input_spec({str(path)!r})[0].size == (32, 64)
        assert "onnx" not in sys.modules and "torch" not in sys.modules
        print("ok")
    """
    result = run_without(code, {"torch", "onnx", "onnxsim"})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
