"""Engine manifest: written atomically beside the engine, round trip, compatibility checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.engine_folder import write_engine_folder

from edgeseg.engine.manifest import (
    check_engine_compatibility,
    check_io_tensors,
    engine_manifest,
    load_manifest,
)
from edgeseg.errors import ArtifactError
from edgeseg.fileio import sha256_file
from edgeseg.manifest import Manifest
from edgeseg.spec import InputSpec

IO = [{"name": "images", "mode": "INPUT", "shape": [1, 3, 64, 96], "dtype": "float32"},
      {"name": "logits", "mode": "OUTPUT", "shape": [1, 4, 64, 96], "dtype": "float32"}]


def make(build: dict[str, object] | None = None, version: str = "10.3.0.30", cc: str | None = "8.7") -> Manifest:
    return engine_manifest(model="tiny", num_classes=4, input_spec=InputSpec(64, 96), precision="int8",
                           tensorrt_version=version, io_tensors=IO, gpu_name="Orin", compute_capability=cc,
                           classes=["a", "b", "c", "d"], hashes={"onnx": "0" * 64}, build=build)


def test_engine_manifest_round_trips_through_the_build_folder_writer(tmp_path: Path) -> None:
    manifest = make({"version_compatible": False})
    path = write_engine_folder(tmp_path, b"ENGINE", manifest, layers={"num_layers": 3})
    assert path == tmp_path / "model.engine" and path.read_bytes() == b"ENGINE"
    loaded = load_manifest(tmp_path)
    assert loaded.to_dict() == manifest.to_dict()
    assert loaded.hashes["engine"] == sha256_file(path)
    assert loaded.artifacts == {"engine": "model.engine", "layers": "layers.json"}
    assert json.loads((tmp_path / "layers.json").read_text()) == {"num_layers": 3}
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_the_engine_layer_writes_no_manifest() -> None:
    """manifest.json has one writer, edgeseg build, from this run's results only: the engine layer's old
    ``write_engine`` merged the previous manifest into the new one."""
    import edgeseg.engine
    import edgeseg.engine.manifest as engine_manifest_module

    assert not hasattr(engine_manifest_module, "write_engine") and "write_engine" not in edgeseg.engine.__all__


def test_load_manifest_verifies_the_checksum(tmp_path: Path) -> None:
    write_engine_folder(tmp_path, b"ENGINE", make())
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["precision"] = "fp32"
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="changed after the build"):
        load_manifest(tmp_path)


def test_same_version_and_gpu_pass() -> None:
    check_engine_compatibility(make(), "10.3.0.30", "8.7")
    check_engine_compatibility(make(), "10.3.0.26", None)  # GPU unknown here: TensorRT checks it itself


@pytest.mark.parametrize("running", ["10.4.0", "10.2.0", "8.6.1", "11.0.0"])
def test_other_tensorrt_version_is_refused_before_deserialisation(running: str) -> None:
    with pytest.raises(ArtifactError, match="another TensorRT version") as info:
        check_engine_compatibility(make(), running, "8.7")
    assert "edgeseg build" in str(info.value) and "10.3.0" in str(info.value)


def test_other_gpu_is_refused() -> None:
    with pytest.raises(ArtifactError, match="another GPU") as info:
        check_engine_compatibility(make(), "10.3.0", "8.6")
    assert "8.7" in str(info.value)


def test_version_compatible_engines_run_on_later_same_major() -> None:
    manifest = make({"version_compatible": True})
    check_engine_compatibility(manifest, "10.8.0", "8.7")
    for running in ("10.2.0", "11.0.0"):
        with pytest.raises(ArtifactError, match="version compatible"):
            check_engine_compatibility(manifest, running, "8.7")


def test_hardware_compatible_engines_run_on_ampere_plus() -> None:
    manifest = make({"hardware_compatibility": "ampere_plus"}, cc="8.6")
    check_engine_compatibility(manifest, "10.3.0", "9.0")
    with pytest.raises(ArtifactError, match="Ampere"):
        check_engine_compatibility(manifest, "10.3.0", "7.5")


def test_manifest_without_tensorrt_version_is_refused() -> None:
    manifest = Manifest(model="tiny", num_classes=4, input_spec=InputSpec(64, 96))
    with pytest.raises(ArtifactError, match="no TensorRT version"):
        check_engine_compatibility(manifest, "10.3.0", "8.7")


def test_io_tensor_mismatch() -> None:
    check_io_tensors(make(), list(reversed(IO)))
    changed = [dict(IO[0]), dict(IO[1], shape=[1, 5, 64, 96])]
    with pytest.raises(ArtifactError, match="differ from its manifest"):
        check_io_tensors(make(), changed)
