"""The Segmenter on the real ONNX Runtime backend, on a tiny model exported here with torch (helpers.tiny_models)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from helpers.tiny_models import conv_net, export_onnx

from edgeseg.manifest import Manifest, ValidationVerdict
from edgeseg.spec import InputSpec, preprocess

SPEC = InputSpec(32, 64)


@pytest.fixture(scope="module")
def build_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    from edgeseg.fileio import sha256_file
    from edgeseg.manifest import write_manifest

    folder = tmp_path_factory.mktemp("engines") / "tiny"
    folder.mkdir()
    model = conv_net(5, hidden=6)
    export_onnx(model, folder / "model.onnx", SPEC)
    manifest = Manifest(model="tiny", num_classes=5, input_spec=SPEC, artifacts={"onnx": "model.onnx"},
                        hashes={"onnx": sha256_file(folder / "model.onnx")},
                        validation=ValidationVerdict(status="passed", candidate="onnx"))
    write_manifest(folder, manifest)  # module-scoped: the function fixture write_build_manifest cannot be used
    return folder, model


def torch_mask(model: object, frame: np.ndarray, order: str) -> tuple[np.ndarray, np.ndarray]:
    import torch

    with torch.inference_mode():
        logits = model(torch.from_numpy(preprocess(frame, SPEC, order)))[0].numpy()  # type: ignore[operator]
    top2 = np.sort(logits, axis=0)[-2:]
    return np.argmax(logits, axis=0).astype(np.uint8), top2[1] - top2[0]


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_masks_equal_torch_cpu_argmax(build_folder: tuple[Path, object], order: str) -> None:
    from edgeseg.runtime import Segmenter

    folder, model = build_folder
    seg = Segmenter.from_artifacts(folder, backend="onnxruntime", frame_order=order, threads=1)
    assert seg.name == "onnxruntime"
    rng = np.random.default_rng(1)
    for size in [(48, 80), (32, 64), (31, 17)]:
        frame = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        mask = seg(frame)
        expected, margin = torch_mask(model, frame, order)
        decided = margin > 1e-5  # exact float ties may break either way between runtimes
        assert decided.mean() > 0.99
        np.testing.assert_array_equal(mask[decided], expected[decided])
    seg.close()


def test_auto_picks_onnxruntime_without_tensorrt(build_folder: tuple[Path, object],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeseg.runtime import Segmenter, segmenter

    monkeypatch.setattr(segmenter, "tensorrt_available", lambda: False)  # as on a machine without TensorRT
    seg = Segmenter.from_artifacts(build_folder[0], threads=1)
    assert seg.name == "onnxruntime"
    seg.close()


def test_no_allocation_growth_over_200_frames(build_folder: tuple[Path, object]) -> None:
    from edgeseg.runtime import Segmenter

    seg = Segmenter.from_artifacts(build_folder[0], backend="onnxruntime", threads=1)
    frame = np.random.default_rng(2).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    for _ in range(10):
        seg(frame)  # warm-up
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(200):
        seg(frame)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert growth < 64 * 1024, f"{growth} bytes retained over 200 frames"
