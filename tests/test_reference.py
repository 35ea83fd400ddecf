"""reference.npz: round trip, refusal of broken files, deterministic smooth sample frames."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseg.errors import ArtifactError
from edgeseg.reference import Reference, load_reference, preprocess_frames, save_reference, synthetic_frames
from edgeseg.spec import InputSpec, preprocess

ROOT = Path(__file__).resolve().parents[1]


def make_reference(count: int = 2, classes: int = 3) -> Reference:
    spec = InputSpec(32, 64)
    frames = synthetic_frames(count, 32, 64, seed=5)
    inputs = preprocess_frames(frames, spec)
    logits = np.random.default_rng(0).normal(size=(count, classes, 32, 64)).astype(np.float32)
    meta = {"model": "m", "num_classes": classes, "input_spec": spec.to_dict(), "onnx_sha256": "ab" * 32}
    return Reference(frames, inputs, logits, meta)


def test_round_trip(tmp_path: Path) -> None:
    original = make_reference()
    save_reference(tmp_path / "reference.npz", original)
    loaded = load_reference(tmp_path / "reference.npz")
    for key in ("frames", "inputs", "logits"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(original, key))
        assert getattr(loaded, key).dtype == getattr(original, key).dtype
    assert loaded.meta == json.loads(json.dumps(original.meta))  # JSON: tuples come back as lists
    assert loaded.input_spec == InputSpec(32, 64)
    assert loaded.num_samples == 2 and loaded.num_classes == 3


def test_inputs_are_the_reference_preprocessing() -> None:
    reference = make_reference()
    for frame, tensor in zip(reference.frames, reference.inputs, strict=True):
        np.testing.assert_array_equal(tensor[None], preprocess(frame, reference.input_spec))


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        load_reference(tmp_path / "none.npz")
    save_reference(tmp_path / "r.npz", make_reference())
    data = (tmp_path / "r.npz").read_bytes()
    (tmp_path / "r.npz").write_bytes(data[: len(data) // 3])
    with pytest.raises(ArtifactError, match="corrupt"):
        load_reference(tmp_path / "r.npz")


def test_pickled_arrays_are_not_loaded(tmp_path: Path) -> None:
    objects = np.array([{"a": 1}], dtype=object)
    np.savez(tmp_path / "r.npz", frames=objects, inputs=objects, logits=objects, meta=np.array("{}"))
    with pytest.raises(ArtifactError, match="corrupt"):
        load_reference(tmp_path / "r.npz")


def test_missing_keys_and_inconsistent_shapes(tmp_path: Path) -> None:
    good = make_reference()
    np.savez(tmp_path / "partial.npz", frames=good.frames)
    with pytest.raises(ArtifactError, match="missing inputs, logits, meta"):
        load_reference(tmp_path / "partial.npz")
    bad = Reference(good.frames, good.inputs[:1], good.logits, good.meta)
    with pytest.raises(ArtifactError, match="shapes disagree"):
        save_reference(tmp_path / "bad.npz", bad)
    assert not (tmp_path / "bad.npz").exists()
    wrong_meta = Reference(good.frames, good.inputs, good.logits, {**good.meta, "num_classes": 7})
    with pytest.raises(ArtifactError, match="meta says 7 classes"):
        save_reference(tmp_path / "bad.npz", wrong_meta)


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
    code = ("import sys, importlib.abc\n"
            "class B(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in {'torch', 'onnx'}: raise ImportError(name)\n"
            "sys.meta_path.insert(0, B())\n"
            f"sys.path.insert(0, {str(ROOT)!r})\n"
            "import edgeseg.reference\nprint('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
