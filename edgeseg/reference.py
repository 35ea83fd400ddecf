"""Reference samples saved at export time: ``reference.npz`` (numpy + stdlib, no torch).

Export writes a few sample frames, their preprocessed inputs and the PyTorch logits;
``validate`` compares any backend against them later, on the robot too, without torch.

File layout (``np.savez``, no pickles):
  frames  uint8   N x H x W x 3   RGB frames at the model input size
  inputs  float32 N x 3 x H x W   ``spec.preprocess(frame)`` of each frame
  logits  float32 N x C x H x W   PyTorch outputs for ``inputs``
  meta    0-d str                 JSON: model, num_classes, input_spec, onnx_sha256, edgeseg_version
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArtifactError, InputError
from .io import atomic_open
from .spec import InputSpec, preprocess, resize_bilinear

REFERENCE_FILE = "reference.npz"
_KEYS = ("frames", "inputs", "logits", "meta")


@dataclass
class Reference:
    frames: np.ndarray  # uint8 N x H x W x 3, RGB
    inputs: np.ndarray  # float32 N x 3 x H x W
    logits: np.ndarray  # float32 N x C x H x W
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_dict(self.meta["input_spec"])

    def check(self, *, source: str = "reference") -> None:
        """Raise an ArtifactError unless the arrays agree with each other and with meta."""
        frames, inputs, logits = self.frames, self.inputs, self.logits
        problems = []
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            problems.append(f"frames: {frames.dtype} {frames.shape} (expected uint8 NxHxWx3)")
        if inputs.dtype != np.float32 or inputs.ndim != 4 or inputs.shape[1] != 3:
            problems.append(f"inputs: {inputs.dtype} {inputs.shape} (expected float32 Nx3xHxW)")
        if logits.dtype != np.float32 or logits.ndim != 4:
            problems.append(f"logits: {logits.dtype} {logits.shape} (expected float32 NxCxHxW)")
        if not problems:
            n, h, w = frames.shape[:3]
            if inputs.shape != (n, 3, h, w) or logits.shape[0] != n or logits.shape[2:] != (h, w):
                problems.append(f"shapes disagree: frames {frames.shape}, inputs {inputs.shape}, "
                                f"logits {logits.shape}")
            if n < 1:
                problems.append("no samples")
        for key in ("model", "num_classes", "input_spec"):
            if key not in self.meta:
                problems.append(f"meta lacks {key!r}")
        if not problems and int(self.meta["num_classes"]) != logits.shape[1]:
            problems.append(f"meta says {self.meta['num_classes']} classes, logits have {logits.shape[1]}")
        if problems:
            raise ArtifactError(f"{source} is inconsistent", found="; ".join(problems),
                                fix="re-export the model: edgeseg export ...")


def save_reference(path: str | os.PathLike[str], reference: Reference) -> Path:
    """Write ``reference.npz`` atomically (plain arrays, loadable without pickle)."""
    reference.check(source="reference to save")
    meta = np.array(json.dumps(reference.meta, sort_keys=True))
    with atomic_open(path, "wb") as handle:
        np.savez(handle, frames=reference.frames, inputs=reference.inputs, logits=reference.logits, meta=meta)
    return Path(path)


def load_reference(path: str | os.PathLike[str]) -> Reference:
    """Read ``reference.npz``; an ArtifactError saying what is wrong if it is missing or corrupt."""
    target = Path(path)
    if not target.is_file():
        raise ArtifactError("reference samples not found", expected=str(target), found="no such file",
                            fix="export the model first: edgeseg export --model NAME --out DIR")
    try:
        with np.load(target, allow_pickle=False) as data:
            missing = [k for k in _KEYS if k not in data.files]
            if missing:
                raise ArtifactError(f"{target} is not an edgeseg reference file", expected=", ".join(_KEYS),
                                    found=f"missing {', '.join(missing)}", fix="re-export the model")
            arrays = {k: data[k] for k in _KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ArtifactError(f"{target} is corrupt", found=f"{type(exc).__name__}: {exc}",
                            fix="re-export the model: edgeseg export ...") from None
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError as exc:
        raise ArtifactError(f"{target} has unreadable metadata", found=str(exc)) from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{target} has unreadable metadata", found=type(meta).__name__)
    reference = Reference(arrays["frames"], arrays["inputs"], arrays["logits"], meta)
    reference.check(source=str(target))
    return reference


def synthetic_frames(count: int, height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """Deterministic uint8 N x H x W x 3 RGB frames: smooth gradients with filled shapes.

    Flat regions with sharp edges (not white noise) give the model something to segment,
    so the reference argmax is mostly far from ties.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for index in range(count):
        # background: a linear gradient between two random colours in a random direction
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx / max(width - 1, 1) + np.sin(angle) * yy / max(height - 1, 1)
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        image = start[None, None, :] * (1 - ramp[..., None]) + end[None, None, :] * ramp[..., None]
        for _ in range(int(rng.integers(3, 8))):
            colour = rng.uniform(0, 255, 3)
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            ry, rx = rng.uniform(0.05, 0.35) * height, rng.uniform(0.05, 0.35) * width
            if rng.random() < 0.5:
                inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            else:
                inside = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
            image[inside] = colour
        image += rng.normal(0.0, 2.0, image.shape)  # a little sensor noise
        frames[index] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return frames


def frames_from_images(paths: Sequence[str | os.PathLike[str]], height: int, width: int) -> np.ndarray:
    """Load images and resize them (half-pixel bilinear, the preprocessing resize) to H x W."""
    from .images import load_image

    if not paths:
        raise InputError("no sample images given", expected="at least one image path")
    frames = np.empty((len(paths), height, width, 3), dtype=np.uint8)
    for index, path in enumerate(paths):
        resized = resize_bilinear(load_image(path), height, width)
        frames[index] = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
    return frames


def preprocess_frames(frames: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``spec.preprocess`` of each RGB frame, stacked into N x 3 x H x W float32."""
    return np.concatenate([preprocess(frame, spec, "RGB") for frame in frames], axis=0)
