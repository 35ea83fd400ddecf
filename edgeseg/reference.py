"""Reference samples: ``reference.npz`` (numpy + stdlib, no torch).

Export (and ``edgeseg build``, through export) writes real frames — from the validation
set, else the calibration images — with the PyTorch verdict on them; ``validate``
compares any backend against them later, on the robot too, without torch. The build
validates its candidate against this same file, so the robot's verdict on a candidate
is the build's verdict.

Compact on purpose (a 512x1024 model with 19 classes would need ~20 MB per frame as
float32 logits): the PyTorch argmax plus its two largest logits per pixel are what
agreement, tie margins and logit errors need. File layout (``np.savez_compressed``,
no pickles; format 2):
  frames  uint8    N x H x W x 3   RGB frames at the model input size
  labels  uint8    N x H x W       PyTorch argmax (uint16 beyond 255 classes)
  top2    float16  N x 2 x H x W   the largest and second-largest PyTorch logit
  masks   uint8    N x H x W       ground truth at model size, 255 = ignore (optional)
  meta    0-d str                  JSON: model, num_classes, input_spec, onnx_sha256,
                                   frames (where they came from), edgeseg_version, format
Inputs are not stored: ``spec.preprocess`` of the frames reproduces them exactly.
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
from .fileio import atomic_open
from .images import load_image, load_mask, to_uint8
from .metrics import IGNORE_INDEX
from .spec import InputSpec, preprocess, resize_bilinear, resize_mask_nearest

REFERENCE_FILE = "reference.npz"
REFERENCE_FORMAT = 2
FLOAT16_MAX = float(np.finfo(np.float16).max)
_REQUIRED = ("frames", "labels", "top2", "meta")
# Frames kept by default: enough for a stable agreement figure, within a size budget at large inputs.
DEFAULT_SAMPLES = 32
MIN_SAMPLES = 8
RAW_BUDGET_BYTES = 64 * 2**20


def default_sample_count(height: int, width: int, available: int | None = None) -> int:
    """How many frames a reference keeps: DEFAULT_SAMPLES, fewer when frames are large (never < MIN_SAMPLES)."""
    per_frame = height * width * (3 + 1 + 4 + 1)  # frame, label, two float16 logits, mask
    count = max(MIN_SAMPLES, min(DEFAULT_SAMPLES, RAW_BUDGET_BYTES // max(per_frame, 1)))
    return count if available is None else max(1, min(count, available))


@dataclass
class Reference:
    frames: np.ndarray  # uint8 N x H x W x 3, RGB
    labels: np.ndarray  # uint8/uint16 N x H x W, PyTorch argmax
    top2: np.ndarray  # float16 N x 2 x H x W
    meta: dict[str, Any] = field(default_factory=dict)
    masks: np.ndarray | None = None  # uint8 N x H x W ground truth, or None

    @classmethod
    def from_logits(cls, frames: np.ndarray, logits: np.ndarray, meta: dict[str, Any],
                    masks: np.ndarray | None = None) -> Reference:
        """Keep the argmax and the two largest logits of float N x C x H x W ``logits``."""
        logits = np.asarray(logits, dtype=np.float32)
        if not np.isfinite(logits).all():
            raise ArtifactError("the reference logits contain NaN or Inf",
                                fix="check the weights (edgeseg eval) before exporting")
        labels = logits.argmax(axis=1)
        if logits.shape[1] >= 2:
            part = np.partition(logits, logits.shape[1] - 2, axis=1)
            top2 = np.stack([part[:, -1], part[:, -2]], axis=1)
        else:  # one class: no runner-up
            top2 = np.stack([logits[:, 0], np.full_like(logits[:, 0], -FLOAT16_MAX)], axis=1)
        dtype = np.uint8 if logits.shape[1] <= 256 else np.uint16
        return cls(np.ascontiguousarray(frames, dtype=np.uint8), labels.astype(dtype),
                   np.clip(top2, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16),
                   {**meta, "format": REFERENCE_FORMAT}, masks)

    @property
    def num_samples(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_dict(self.meta["input_spec"])

    @property
    def has_masks(self) -> bool:
        return self.masks is not None

    @property
    def synthetic(self) -> bool:
        """True when the frames are abstract shapes, not scenes (agreement on them says little)."""
        return str(self.meta.get("frames", "")).startswith("synthetic(")

    def inputs(self, index: int) -> np.ndarray:
        """The 1x3xHxW model input of sample ``index`` (the preprocessing PyTorch saw at export)."""
        return preprocess(self.frames[index], self.input_spec, "RGB")

    def check(self, *, source: str = "reference") -> None:
        """Raise an ArtifactError unless the arrays agree with each other and with meta."""
        problems = _shape_problems(self)
        for key in ("model", "num_classes", "input_spec"):
            if key not in self.meta:
                problems.append(f"meta lacks {key!r}")
        if not problems:
            problems += _value_problems(self)
        if problems:
            raise ArtifactError(f"{source} is inconsistent", found="; ".join(problems),
                                fix="export the model again: edgeseg export ... (or edgeseg build --force)")


def _shape_problems(ref: Reference) -> list[str]:
    frames, labels, top2, masks = ref.frames, ref.labels, ref.top2, ref.masks
    problems = []
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        problems.append(f"frames: {frames.dtype} {frames.shape} (expected uint8 NxHxWx3)")
    if labels.dtype not in (np.uint8, np.uint16) or labels.ndim != 3:
        problems.append(f"labels: {labels.dtype} {labels.shape} (expected uint8 NxHxW)")
    if top2.dtype != np.float16 or top2.ndim != 4 or top2.shape[1] != 2:
        problems.append(f"top2: {top2.dtype} {top2.shape} (expected float16 Nx2xHxW)")
    if masks is not None and (masks.dtype != np.uint8 or masks.ndim != 3):
        problems.append(f"masks: {masks.dtype} {masks.shape} (expected uint8 NxHxW)")
    if problems:
        return problems
    n, h, w = frames.shape[:3]
    shapes = [labels.shape, (top2.shape[0], *top2.shape[2:])] + ([masks.shape] if masks is not None else [])
    if n < 1:
        problems.append("no samples")
    elif any(shape != (n, h, w) for shape in shapes):
        problems.append(f"shapes disagree: frames {frames.shape}, labels {labels.shape}, top2 {top2.shape}"
                        + (f", masks {masks.shape}" if masks is not None else ""))
    return problems


def _value_problems(ref: Reference) -> list[str]:
    problems = []
    try:
        classes = int(ref.meta["num_classes"])
        spec = ref.input_spec
    except (TypeError, ValueError, ArtifactError) as exc:
        return [f"meta is unreadable ({exc})"]
    if classes < 1:
        problems.append(f"meta says {classes} classes")
    elif int(ref.labels.max()) >= classes:
        problems.append(f"labels reach {int(ref.labels.max())}, meta says {classes} classes")
    if not np.isfinite(ref.top2).all():
        problems.append(f"{int(np.size(ref.top2) - np.count_nonzero(np.isfinite(ref.top2)))} logits are NaN or Inf")
    if ref.frames.shape[1:3] != spec.size:
        problems.append(f"frames are {ref.frames.shape[1]}x{ref.frames.shape[2]}, the input spec says "
                        f"{spec.height}x{spec.width}")
    if ref.masks is not None:
        bad = (ref.masks != IGNORE_INDEX) & (ref.masks >= classes)
        if bad.any():
            problems.append(f"masks hold labels >= {classes} (other than {IGNORE_INDEX} = ignore)")
    return problems


def save_reference(path: str | os.PathLike[str], reference: Reference) -> Path:
    """Write ``reference.npz`` atomically (compressed plain arrays, loadable without pickle)."""
    reference.check(source="reference to save")
    arrays = {"frames": reference.frames, "labels": reference.labels, "top2": reference.top2,
              "meta": np.array(json.dumps(reference.meta, sort_keys=True))}
    if reference.masks is not None:
        arrays["masks"] = reference.masks
    with atomic_open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
    return Path(path)


def load_reference(path: str | os.PathLike[str]) -> Reference:
    """Read ``reference.npz``; an ArtifactError saying what is wrong if it is missing or corrupt."""
    target = Path(path)
    if not target.is_file():
        raise ArtifactError("reference samples not found", expected=str(target), found="no such file",
                            fix="export the model first: edgeseg export --model NAME --out DIR "
                                "(edgeseg build writes it too)")
    if not zipfile.is_zipfile(target):  # np.load would read any other file as pickled data
        raise ArtifactError(f"{target} is not a reference.npz", expected=f"the {REFERENCE_FILE} written by edgeseg "
                            "export or build (a NumPy .npz archive of frames and PyTorch's verdict)",
                            found=_file_kind(target),
                            fix=f"pass --reference DIR/{REFERENCE_FILE} (it sits beside model.onnx in the build "
                                "folder)")
    try:
        with np.load(target, allow_pickle=False) as data:
            if "logits" in data.files and "labels" not in data.files:
                raise ArtifactError(f"{target} was written by an older edgeseg (format 1: float32 logits)",
                                    fix="rebuild the folder with this version: edgeseg build --force ...")
            missing = [k for k in _REQUIRED if k not in data.files]
            if missing:
                raise ArtifactError(f"{target} is not an edgeseg reference file", expected=", ".join(_REQUIRED),
                                    found=f"missing {', '.join(missing)}", fix="export the model again")
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ArtifactError(f"{target} is corrupt", found=f"{type(exc).__name__}: {exc}",
                            fix="export the model again: edgeseg export ...") from None
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError as exc:
        raise ArtifactError(f"{target} has unreadable metadata", found=str(exc)) from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{target} has unreadable metadata", found=type(meta).__name__)
    reference = Reference(arrays["frames"], arrays["labels"], arrays["top2"], meta, arrays.get("masks"))
    reference.check(source=str(target))
    return reference


def _file_kind(path: Path) -> str:
    """What a file that is not an .npz archive looks like, for the error."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if not head:
        return "an empty file"
    if head.startswith(b"\x93NUMPY"):
        return "a single NumPy array (.npy), not an .npz archive"
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON file"
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8"):
        return "an image"
    if path.suffix in (".onnx", ".engine", ".plan", ".pt", ".pth", ".safetensors"):
        return f"a model file ({path.suffix})"
    return f"a {path.stat().st_size}-byte file that is no .npz archive"


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
        frames[index] = to_uint8(image)
    return frames


def frames_from_images(paths: Sequence[str | os.PathLike[str]], height: int, width: int) -> np.ndarray:
    """Load images and resize them (half-pixel bilinear, the preprocessing resize) to H x W."""
    if not paths:
        raise InputError("no sample images given", expected="at least one image path")
    frames = np.empty((len(paths), height, width, 3), dtype=np.uint8)
    for index, path in enumerate(paths):
        resized = resize_bilinear(load_image(path), height, width)
        frames[index] = to_uint8(resized)
    return frames


def preprocess_frames(frames: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``spec.preprocess`` of each RGB frame, stacked into N x 3 x H x W float32."""
    return np.concatenate([preprocess(frame, spec, "RGB") for frame in frames], axis=0)


def masks_from_files(paths: Sequence[str | os.PathLike[str]], height: int, width: int,
                     num_classes: int) -> np.ndarray:
    """Ground-truth label maps resized (nearest, pixel centres) to H x W; labels checked against the classes."""
    masks = np.empty((len(paths), height, width), dtype=np.uint8)
    for index, path in enumerate(paths):
        mask = load_mask(path)
        masks[index] = resize_mask_nearest(mask, height, width)
        bad = np.unique(mask[(mask != IGNORE_INDEX) & (mask >= num_classes)])
        if bad.size:
            raise InputError(f"mask {path} holds labels outside the model's {num_classes} classes",
                             expected=f"labels 0..{num_classes - 1}, or {IGNORE_INDEX} for ignore",
                             found="labels " + ", ".join(str(v) for v in bad[:8]),
                             fix="map the labels to train ids first, or validate with the model trained on them")
    return masks
