"""A build folder is a promise: the Segmenter loads only what the build checked, and says why it refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.tiny_onnx import save_conv_onnx

from edgeseg.errors import ArtifactError
from edgeseg.manifest import Manifest, manifest_checksum
from edgeseg.runtime.segmenter import Segmenter
from edgeseg.spec import InputSpec

SPEC = InputSpec(32, 64)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_conv_onnx(tmp_path_factory.mktemp("onnx") / "model.onnx", spec=SPEC, num_classes=5, kernel=3,
                          metadata=False)


def folder_with(tmp_path: Path, onnx_file: Path, write, *, validated: str | None = "onnx",
                status: str = "passed", int8: bool = False) -> Path:
    folder = tmp_path / "build"
    folder.mkdir(exist_ok=True)
    shutil.copy(onnx_file, folder / "model.onnx")
    artifacts = {"onnx": "model.onnx"}
    if int8:
        shutil.copy(onnx_file, folder / "model.int8.ort.onnx")  # stands in for the INT8 file
        artifacts["onnx_int8_cpu"] = "model.int8.ort.onnx"
    write(folder, Manifest(model="tiny", num_classes=5, input_spec=SPEC, artifacts=artifacts, precision="int8"),
          validated=validated, status=status)
    return folder


def frame() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)


def test_a_passed_build_loads_and_says_what_it_runs(tmp_path: Path, onnx_file: Path, write_build_manifest) -> None:
    folder = folder_with(tmp_path, onnx_file, write_build_manifest, validated="onnx_int8_cpu", int8=True)
    with Segmenter.from_artifacts(folder) as seg:
        assert seg.model_file == str(folder / "model.int8.ort.onnx") and seg.precision == "int8"
        assert seg.warning is None and seg.validation_status == "passed" and seg(frame()).shape == (32, 64)


@pytest.mark.parametrize(("validated", "status", "why"), [
    ("onnx", "failed", "failed the build's accuracy gates"),
    (None, "not_run", "was not validated against PyTorch"),
])
def test_unvalidated_folders_are_refused_unless_allowed(tmp_path: Path, onnx_file: Path, write_build_manifest,
                                                        validated: str | None, status: str, why: str) -> None:
    folder = folder_with(tmp_path, onnx_file, write_build_manifest, validated=validated, status=status)
    with pytest.raises(ArtifactError, match="refusing to run an unvalidated model") as info:
        Segmenter.from_artifacts(folder)
    assert why in str(info.value) and "--allow-unvalidated" in str(info.value)
    with Segmenter.from_artifacts(folder, allow_unvalidated=True) as seg:
        assert seg.warning is not None and why in seg.warning


def test_a_file_other_than_the_validated_one_is_not_trusted(tmp_path: Path, onnx_file: Path,
                                                            write_build_manifest) -> None:
    folder = folder_with(tmp_path, onnx_file, write_build_manifest, validated="onnx", int8=True)
    with Segmenter.from_artifacts(folder) as seg:  # the validated FP32 file, not the unchecked INT8 one
        assert seg.model_file.endswith("model.onnx") and seg.precision == "fp32"


def test_missing_validated_file_is_an_error_not_a_silent_fallback(tmp_path: Path, onnx_file: Path,
                                                                  write_build_manifest) -> None:
    folder = folder_with(tmp_path, onnx_file, write_build_manifest, validated="onnx_int8_cpu", int8=True)
    (folder / "model.int8.ort.onnx").unlink()
    with pytest.raises(ArtifactError, match="has no onnx_int8_cpu file"):
        Segmenter.from_artifacts(folder)


def test_changed_model_file_is_refused_even_when_allowed(tmp_path: Path, onnx_file: Path,
                                                         write_build_manifest) -> None:
    folder = folder_with(tmp_path, onnx_file, write_build_manifest)
    with open(folder / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    for allow in (False, True):
        with pytest.raises(ArtifactError, match="not the file the build checked"):
            Segmenter.from_artifacts(folder, allow_unvalidated=allow)


def test_edited_manifest_is_refused(tmp_path: Path, onnx_file: Path, write_build_manifest) -> None:
    folder = folder_with(tmp_path, onnx_file, write_build_manifest)
    data = json.loads((folder / "manifest.json").read_text())
    data["validation"]["status"] = "passed"
    data["hashes"]["onnx"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="changed after the build"):
        Segmenter.from_artifacts(folder)


def test_edited_class_count_and_size_fail_on_the_model_not_later(tmp_path: Path, onnx_file: Path,
                                                                 write_build_manifest) -> None:
    folder = folder_with(tmp_path, onnx_file, write_build_manifest)
    for key, value, message in (("num_classes", 6, "5 output classes vs manifest num_classes 6"),
                                ("input_spec", {**SPEC.to_dict(), "height": 64}, "input")):
        data = json.loads((folder / "manifest.json").read_text())
        data[key] = value
        data["checksum"] = manifest_checksum(data)  # even a consistent edit is caught by the model's shapes
        (folder / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(ArtifactError, match="does not match its manifest") as info:
            Segmenter.from_artifacts(folder)
        assert message in str(info.value)
        write_build_manifest(folder, Manifest(
            model="tiny", num_classes=5, input_spec=SPEC, artifacts={"onnx": "model.onnx"}), validated="onnx")


def test_badly_typed_manifest_field_is_an_artifact_error(tmp_path: Path, onnx_file: Path,
                                                         write_build_manifest) -> None:
    folder = folder_with(tmp_path, onnx_file, write_build_manifest)
    data = json.loads((folder / "manifest.json").read_text())
    data["num_classes"] = "six"
    data["checksum"] = manifest_checksum(data)
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="'num_classes' is not a whole number"):
        Segmenter.from_artifacts(folder)


def test_export_folder_error_names_the_build_command(tmp_path: Path, onnx_file: Path) -> None:
    shutil.copy(onnx_file, tmp_path / "model.onnx")
    with pytest.raises(ArtifactError, match="holds an export, not a build") as info:
        Segmenter.from_artifacts(tmp_path)
    assert f"edgeseg build --onnx {tmp_path / 'model.onnx'}" in str(info.value)
