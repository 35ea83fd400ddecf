"""A validated build folder for runtime tests, without torch: one ONNX convolution, a manifest whose
validation passed, run by ONNX Runtime (what ``edgeseg run`` / ``bench --source`` open)."""

from __future__ import annotations

from pathlib import Path

from edgeseg.spec import InputSpec
from helpers.tiny_onnx import save_conv_onnx

SPEC = InputSpec(32, 64)


def validated_build(root: Path, *, spec: InputSpec = SPEC, num_classes: int = 4) -> Path:
    from edgeseg.fileio import sha256_file
    from edgeseg.manifest import Manifest, ValidationVerdict, write_manifest

    save_conv_onnx(root / "model.onnx", spec=spec, num_classes=num_classes, kernel=3, metadata=False)
    write_manifest(root, Manifest(model="tiny", num_classes=num_classes, input_spec=spec,
                                  artifacts={"onnx": "model.onnx"}, hashes={"onnx": sha256_file(root / "model.onnx")},
                                  validation=ValidationVerdict(status="passed", candidate="onnx")))
    return root
