"""reference.npz: round trip, refusal of broken files, deterministic smooth sample frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.blocked_imports import run_without

from edgeseg.errors import ArtifactError
from edgeseg.reference import (
    Reference,
    default_sample_count,
    load_reference,
    masks_from_files,
    save_reference,
    synthetic_frames,
)
from edgeseg.spec import InputSpec, preprocess


def make_logits(count: int = 2, classes: int = 3) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(count, classes, 32, 64)).astype(np.float32)


def make_reference(count: int = 2, classes: int = 3, masks: np.ndarray | None = None) -> Reference:
    spec = InputSpec(32, 64)
    frames = synthetic_frames(count, 32, 64, seed=5)
    meta = {"model": "m", "num_classes": classes, "input_spec": spec.to_dict(), "onnx_sha256": "ab" * 32}
    return Reference.from_logits(frames, make_logits(count, classes), meta, masks)


def test_round_trip(tmp_path: Path) -> None:
    masks = np.full((2, 32, 64), 255, np.uint8)
    masks[:, :10] = 1
    original = make_reference(masks=masks)
    save_reference(tmp_path / "reference.npz", original)
    loaded = load_reference(tmp_path / "reference.npz")
    for key in ("frames", "labels", "top2", "masks"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(original, key))
        assert getattr(loaded, key).dtype == getattr(original, key).dtype
    assert loaded.meta == json.loads(json.dumps(original.meta))  # JSON: tuples come back as lists
    assert loaded.input_spec == InputSpec(32, 64)
    assert loaded.num_samples == 2 and loaded.num_classes == 3 and loaded.has_masks


def test_compact_form_keeps_argmax_and_the_two_largest_logits() -> None:
    logits = make_logits()
    reference = make_reference()
    np.testing.assert_array_equal(reference.labels, logits.argmax(axis=1))
    ordered = np.sort(logits, axis=1)
    np.testing.assert_allclose(reference.top2[:, 0], ordered[:, -1], atol=2e-3)
    np.testing.assert_allclose(reference.top2[:, 1], ordered[:, -2], atol=2e-3)
    assert reference.labels.dtype == np.uint8 and reference.top2.dtype == np.float16


def test_file_is_small_at_camera_size(tmp_path: Path) -> None:
    """16 frames at 512x1024 with 19 classes: float32 logits would be ~640 MB, the compact form a few dozen."""
    count, h, w = 16, 512, 1024
    frames = synthetic_frames(count, h, w, seed=1)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 19, (count, h, w)).astype(np.uint8)
    top2 = np.sort(rng.normal(size=(count, 2, h, w)), axis=1)[:, ::-1].astype(np.float16)
    meta = {"model": "m", "num_classes": 19, "input_spec": InputSpec(h, w).to_dict()}
    path = save_reference(tmp_path / "reference.npz", Reference(frames, labels, top2, meta))
    assert path.stat().st_size < 120 * 2**20  # random logits barely compress: real ones do far better


def test_default_sample_count_fits_the_budget() -> None:
    assert default_sample_count(192, 384) == 32
    assert 8 <= default_sample_count(512, 1024) < 32
    assert default_sample_count(2048, 4096) == 8  # never fewer than the minimum
    assert default_sample_count(192, 384, available=5) == 5


def test_inputs_are_the_reference_preprocessing() -> None:
    reference = make_reference()
    for index, frame in enumerate(reference.frames):
        np.testing.assert_array_equal(reference.inputs(index), preprocess(frame, reference.input_spec))


def test_nan_logits_are_refused(tmp_path: Path) -> None:
    logits = make_logits()
    logits[0, 0, 0, 0] = np.nan
    meta = {"model": "m", "num_classes": 3, "input_spec": InputSpec(32, 64).to_dict()}
    with pytest.raises(ArtifactError, match="NaN"):
        Reference.from_logits(synthetic_frames(2, 32, 64), logits, meta)
    good = make_reference()
    good.top2[1, 0, 3, 3] = np.nan  # a file edited or damaged after export
    with pytest.raises(ArtifactError, match="NaN or Inf"):
        save_reference(tmp_path / "r.npz", good)
    arrays = {"frames": good.frames, "labels": good.labels, "top2": good.top2, "meta": np.array(json.dumps(meta))}
    np.savez(tmp_path / "r.npz", **arrays)
    with pytest.raises(ArtifactError, match="NaN or Inf"):
        load_reference(tmp_path / "r.npz")


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        load_reference(tmp_path / "none.npz")
    save_reference(tmp_path / "r.npz", make_reference())
    data = (tmp_path / "r.npz").read_bytes()
    (tmp_path / "r.npz").write_bytes(data[: len(data) // 3])
    with pytest.raises(ArtifactError, match="corrupt"):
        load_reference(tmp_path / "r.npz")


def test_format_1_files_ask_for_a_rebuild(tmp_path: Path) -> None:
    np.savez(tmp_path / "r.npz", frames=np.zeros((1, 32, 64, 3), np.uint8), inputs=np.zeros((1, 3, 32, 64)),
             logits=np.zeros((1, 3, 32, 64), np.float32), meta=np.array("{}"))
    with pytest.raises(ArtifactError, match="older edgeseg"):
        load_reference(tmp_path / "r.npz")


def test_pickled_arrays_are_not_loaded(tmp_path: Path) -> None:
    objects = np.array([{"a": 1}], dtype=object)
    np.savez(tmp_path / "r.npz", frames=objects, labels=objects, top2=objects, meta=np.array("{}"))
    with pytest.raises(ArtifactError, match="corrupt"):
        load_reference(tmp_path / "r.npz")


def test_missing_keys_and_inconsistent_shapes(tmp_path: Path) -> None:
    good = make_reference()
    np.savez(tmp_path / "partial.npz", frames=good.frames)
    with pytest.raises(ArtifactError, match="missing labels, top2, meta"):
        load_reference(tmp_path / "partial.npz")
    bad = Reference(good.frames, good.labels[:1], good.top2, good.meta)
    with pytest.raises(ArtifactError, match="shapes disagree"):
        save_reference(tmp_path / "bad.npz", bad)
    assert not (tmp_path / "bad.npz").exists()
    wrong_meta = Reference(good.frames, good.labels, good.top2, {**good.meta, "num_classes": 1})
    with pytest.raises(ArtifactError, match="meta says 1 classes"):
        save_reference(tmp_path / "bad.npz", wrong_meta)
    wrong_size = Reference(good.frames, good.labels, good.top2,
                           {**good.meta, "input_spec": InputSpec(64, 64).to_dict()})
    with pytest.raises(ArtifactError, match="input spec says 64x64"):
        save_reference(tmp_path / "bad.npz", wrong_size)


def test_masks_from_files_resize_and_check_labels(tmp_path: Path) -> None:
    from edgeseg.errors import InputError
    from edgeseg.images import save_png

    mask = np.zeros((64, 128), np.uint8)
    mask[:, 64:] = 2
    mask[0, 0] = 255
    save_png(tmp_path / "a.png", mask)
    resized = masks_from_files([tmp_path / "a.png"], 32, 64, num_classes=3)
    assert resized.shape == (1, 32, 64) and set(np.unique(resized)) == {0, 2}
    mask[5, 5] = 7
    save_png(tmp_path / "b.png", mask)
    with pytest.raises(InputError, match="outside the model's 3 classes"):
        masks_from_files([tmp_path / "b.png"], 32, 64, num_classes=3)


def test_synthetic_frames_are_deterministic_and_smooth() -> None:
    first, again = synthetic_frames(3, 48, 64, seed=1), synthetic_frames(3, 48, 64, seed=1)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (3, 48, 64, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, synthetic_frames(3, 48, 64, seed=2))
    assert not np.array_equal(first[0], first[1])
    steps = np.abs(np.diff(first.astype(np.int16), axis=2))
    assert np.median(steps) <= 4  # mostly flat regions and gradients, not noise
    assert first.std() > 20  # but with real contrast
    noise = np.random.default_rng(0).integers(0, 256, first.shape)
    assert np.median(np.abs(np.diff(noise, axis=2))) > 40  # the same statistic tells noise apart


def test_reference_module_needs_no_torch() -> None:
    result = run_without("import edgeseg.reference\nprint('ok')\n", {"torch", "onnx"}, timeout=60)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
