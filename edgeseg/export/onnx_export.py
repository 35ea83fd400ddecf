"""PyTorch -> ONNX with checks at every step (layer 3, torch).

``export_onnx(model, config, out_dir)`` writes ``model.onnx`` and ``reference.npz`` only
after the graph passed the TensorRT hygiene checks and ONNX Runtime reproduced the
PyTorch logits on the reference samples; otherwise it raises and writes nothing.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .. import __version__
from ..errors import ArtifactError, ConfigError, ModelError, require
from ..fileio import atomic_write_bytes
from ..models.weights import check_finite
from ..onnx_model import read_onnx_metadata as read_onnx_metadata  # public API: edgeseg.onnx_model owns it
from ..onnx_model import remove_metadata, write_export_metadata
from ..reference import (
    REFERENCE_FILE,
    Reference,
    frames_from_images,
    masks_from_files,
    preprocess_frames,
    save_reference,
    synthetic_frames,
)
from ..spec import InputSpec
from .checks import ParityResult, compare_logits, require_clean_graph, require_parity, run_onnxruntime

ONNX_FILE = "model.onnx"
FORWARD_CHUNK = 4
OPSET_RANGE = (13, 20)  # >= 13: per-channel Q/DQ; <= 20: what the TorchScript exporter emits


@dataclass
class ExportConfig:
    model: str
    num_classes: int
    input_spec: InputSpec
    batch: int = 1
    opset: int = 17
    simplify: bool = True
    num_reference_samples: int = 8  # synthetic frames when no sample_images are given
    seed: int = 0
    classes: list[str] = field(default_factory=list)
    class_colors: list[list[int]] = field(default_factory=list)  # the training data's colours ([]: the palette's)
    sample_images: list[Path] = field(default_factory=list)  # reference frames from these instead
    sample_masks: list[Path] = field(default_factory=list)  # their ground truth (same order), or empty
    samples_source: str = ""  # where the sample images come from, recorded in reference.npz

    def __post_init__(self) -> None:
        if not 1 <= self.batch <= 64:
            raise ConfigError("batch must be from 1 to 64", found=str(self.batch))
        if not OPSET_RANGE[0] <= self.opset <= OPSET_RANGE[1]:
            raise ConfigError("unsupported ONNX opset", expected=f"{OPSET_RANGE[0]}..{OPSET_RANGE[1]}",
                              found=str(self.opset), fix="use --opset 17 (TensorRT 8.5 and later parse it)")
        if self.num_reference_samples < 1 and not self.sample_images:
            raise ConfigError("at least one reference sample is needed", found=str(self.num_reference_samples))
        if not 1 <= self.num_classes <= 255:
            raise ConfigError("num_classes must be from 1 to 255", found=str(self.num_classes))
        if self.sample_masks and len(self.sample_masks) != len(self.sample_images):
            raise ConfigError("every reference image needs its mask", expected=f"{len(self.sample_images)} masks",
                              found=f"{len(self.sample_masks)} masks")
        if self.classes and len(self.classes) != self.num_classes:
            raise ConfigError("class names do not match num_classes", expected=f"{self.num_classes} names",
                              found=f"{len(self.classes)} names")

    @property
    def class_names(self) -> list[str]:
        return list(self.classes) or [f"class_{i}" for i in range(self.num_classes)]


@dataclass
class ExportResult:
    onnx_path: Path
    reference_path: Path
    onnx_sha256: str
    parity: ParityResult
    simplified: bool
    num_nodes: int
    notices: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds

    @property
    def max_abs_diff(self) -> float:
        return self.parity.max_abs_diff

    @property
    def argmax_agreement(self) -> float:
        return self.parity.argmax_agreement

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for manifest.json / report.json)."""
        return {"onnx": str(self.onnx_path), "reference": str(self.reference_path), "onnx_sha256": self.onnx_sha256,
                "parity": self.parity.to_dict(), "simplified": self.simplified, "num_nodes": self.num_nodes,
                "notices": list(self.notices), "timings": dict(self.timings)}


class _AdaptivePoolRecorder(TorchFunctionMode):
    """Records adaptive pooling calls whose output is not 1x1 (module or functional)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name.startswith("adaptive_") and "pool" in name:
            size = args[1] if len(args) > 1 else kwargs.get("output_size")
            sizes = size if isinstance(size, (tuple, list)) else (size,)
            if any(s != 1 for s in sizes):
                self.found.append(f"{name}(output_size={size}) on a {tuple(args[0].shape)} tensor")
        return func(*args, **kwargs)


def _torch_forward(model: nn.Module, inputs: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """PyTorch logits for N inputs, plus the adaptive pools (k > 1) the forward used."""
    chunks = []
    with _AdaptivePoolRecorder() as recorder, torch.inference_mode():
        for start in range(0, len(inputs), FORWARD_CHUNK):  # bounded activation memory for many samples
            logits = model(torch.from_numpy(inputs[start:start + FORWARD_CHUNK]))
            if not isinstance(logits, torch.Tensor):
                raise ModelError("the model must return one logits tensor in eval mode",
                                 found=type(logits).__name__, fix="return only the main output when not training")
            chunks.append(logits.float().numpy())
    return np.concatenate(chunks, axis=0), sorted(set(recorder.found))


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    # The legacy exporter warns that it is legacy, and tracing warns that shapes become
    # constants: both expected here (static shapes are the point; parity checks the result).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        yield


def _to_onnx(model: nn.Module, example: torch.Tensor, config: ExportConfig) -> bytes:
    # A private temp folder, not out_dir: nothing lands under --out before every check passed.
    with tempfile.TemporaryDirectory(prefix="edgeseg-export-") as folder:
        path = Path(folder) / "raw.onnx"
        _run_exporter(model, example, config, path)
        return path.read_bytes()


def _run_exporter(model: nn.Module, example: torch.Tensor, config: ExportConfig, path: Path) -> None:
    spec = config.input_spec
    try:
        with _quiet_exporter(), torch.no_grad():
            torch.onnx.export(model, (example,), path, dynamo=False, input_names=[spec.input_name],
                              output_names=[spec.output_name], opset_version=config.opset,
                              do_constant_folding=True, dynamic_axes=None)
    except torch.onnx.errors.OnnxExporterError as exc:
        raise ModelError(f"{config.model} cannot be exported to ONNX opset {config.opset}",
                         found=str(exc).strip().splitlines()[0][:400],
                         fix="replace the unsupported op in the model, or try another --opset") from None


def _simplify(model_proto: Any, notices: list[str]) -> Any:
    onnxsim = require("onnxsim", purpose="simplifying the exported graph")
    try:
        simplified, ok = onnxsim.simplify(model_proto)
    except Exception as exc:  # onnxsim raises plain RuntimeErrors from its C++ core
        ok, simplified, reason = False, None, f"{type(exc).__name__}: {str(exc).strip()[:300]}"
    else:
        reason = "its own check reported a mismatch"
    if not ok:
        raise ArtifactError("simplifying the exported ONNX graph failed", found=reason,
                            fix="--no-simplify keeps the graph as traced; it passes the TensorRT check only if "
                                "the model computes no sizes from tensor shapes")
    # onnxsim annotates its work (lists of removed nodes that grow with the model): keep the file lean.
    remove_metadata(simplified, prefix="onnxsim.")
    notices.append(f"simplified with onnxsim {getattr(onnxsim, '__version__', '?')}")
    return simplified


def reference_frames(config: ExportConfig) -> np.ndarray:
    spec = config.input_spec
    if config.sample_images:
        return frames_from_images(config.sample_images, spec.height, spec.width)
    return synthetic_frames(config.num_reference_samples, spec.height, spec.width, seed=config.seed)


def _check_model(model: nn.Module, config: ExportConfig) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ModelError("export needs a torch.nn.Module", found=type(model).__name__)
    model_classes = getattr(model, "num_classes", None)
    if model_classes is not None and int(model_classes) != config.num_classes:
        raise ConfigError("num_classes disagrees with the model", expected=str(model_classes),
                          found=str(config.num_classes))
    devices = {p.device.type for p in model.parameters()}
    if devices - {"cpu"}:  # parity is measured against ONNX Runtime on CPU: export from a CPU copy
        model = copy.deepcopy(model).cpu()
    return model.eval()


def export_onnx(model: nn.Module, config: ExportConfig, out_dir: str | os.PathLike[str], *,
                log: Callable[[str], None] | None = None) -> ExportResult:
    """Export ``model`` to ``out_dir/model.onnx`` + ``reference.npz`` after graph and parity checks."""
    say = log or (lambda _message: None)
    out = Path(out_dir)
    laps = _Laps()
    notices: list[str] = []
    model = _check_model(model, config)
    check_finite(model.state_dict(), source=f"the weights of {config.model}")
    frames, masks, inputs, torch_logits = _pytorch_reference(model, config, say)
    laps("reference")
    model_proto = _checked_graph(model, inputs, config, notices, say, laps)
    model_bytes = model_proto.SerializeToString()

    say("parity: ONNX Runtime (CPU) vs PyTorch")
    onnx_logits = run_onnxruntime(model_bytes, inputs, input_name=config.input_spec.input_name,
                                  output_name=config.input_spec.output_name)
    parity = compare_logits(torch_logits, onnx_logits)
    require_parity(parity, what=f"{config.model} ONNX Runtime vs PyTorch")
    laps("parity")

    onnx_sha256 = hashlib.sha256(model_bytes).hexdigest()
    onnx_path = atomic_write_bytes(out / ONNX_FILE, model_bytes)
    meta = {"model": config.model, "num_classes": config.num_classes, "classes": config.class_names,
            "input_spec": config.input_spec.to_dict(), "onnx_sha256": onnx_sha256, "edgeseg_version": __version__,
            "frames": (config.samples_source or "images") if config.sample_images else f"synthetic(seed={config.seed})",
            "ground_truth": masks is not None}
    reference_path = save_reference(out / REFERENCE_FILE, Reference.from_logits(frames, torch_logits, meta, masks))
    laps("write")
    say(f"wrote {onnx_path} and {reference_path}")
    return ExportResult(onnx_path, reference_path, onnx_sha256, parity, config.simplify,
                        len(model_proto.graph.node), notices, laps.timings)


class _Laps:
    """Seconds per export step, for the summary."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.clock = time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self.timings[step] = round(now - self.clock, 3)
        self.clock = now


def _pytorch_reference(model: nn.Module, config: ExportConfig, say: Callable[[str], None]
                       ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """The reference frames (and masks), their inputs and PyTorch's logits, checked."""
    say(f"reference: {config.num_reference_samples if not config.sample_images else len(config.sample_images)}"
        f" samples at {config.input_spec.height}x{config.input_spec.width}")
    frames = reference_frames(config)
    masks = (masks_from_files(config.sample_masks, *config.input_spec.size, config.num_classes)
             if config.sample_masks else None)
    inputs = preprocess_frames(frames, config.input_spec)
    torch_logits, adaptive = _torch_forward(model, inputs)
    if adaptive:
        raise ArtifactError(
            f"{config.model} uses adaptive pooling with an output larger than 1x1",
            expected="AdaptiveAvgPool2d(1) (exports as GlobalAveragePool) or AvgPool2d with a fixed kernel",
            found="; ".join(adaptive),
            fix="compute the pooling kernel from the feature size in forward(): kernel = size // bins, as the "
                "DSPP/MDSPP decoders in edgeseg/models/speed_decoder.py do",
        )
    expected = (len(frames), config.num_classes, *config.input_spec.size)
    if torch_logits.shape != expected:
        raise ModelError(f"{config.model} returned logits of the wrong shape", expected=str(expected),
                         found=str(torch_logits.shape))
    check_finite({"logits": torch.from_numpy(torch_logits)}, source=f"the PyTorch outputs of {config.model}")
    return frames, masks, inputs, torch_logits


def _checked_graph(model: nn.Module, inputs: np.ndarray, config: ExportConfig, notices: list[str],
                   say: Callable[[str], None], laps: _Laps) -> Any:
    """torch.onnx.export -> onnx checker -> onnxsim -> graph hygiene for TensorRT -> metadata."""
    onnx = require("onnx", purpose="exporting models")
    say(f"export: torch.onnx.export opset {config.opset}, batch {config.batch}, static shapes")
    example = np.concatenate([inputs] * (-(-config.batch // len(inputs))))[:config.batch]
    model_proto = onnx.load_from_string(_to_onnx(model, torch.from_numpy(example), config))
    laps("export")
    try:
        onnx.checker.check_model(model_proto)
    except onnx.checker.ValidationError as exc:
        raise ArtifactError("the exported ONNX model is invalid", found=str(exc).strip()[:400]) from None
    if config.simplify:
        say("simplify: onnxsim")
        model_proto = _simplify(model_proto, notices)
    else:
        notices.append("graph not simplified (--no-simplify)")
    laps("simplify")
    say("check: graph hygiene for TensorRT")
    require_clean_graph(model_proto)
    write_export_metadata(model_proto, model=config.model, num_classes=config.num_classes,
                          classes=config.class_names, input_spec=config.input_spec, class_colors=config.class_colors)
    laps("check")
    return model_proto


def export_summary_rows(result: ExportResult) -> Sequence[tuple[str, str]]:
    """Rows for the CLI summary table."""
    parity = result.parity
    return [
        ("onnx", f"{result.onnx_path} ({result.num_nodes} nodes, sha256 {result.onnx_sha256[:12]})"),
        ("reference", str(result.reference_path)),
        ("max |diff|", f"{parity.max_abs_diff:.3g} (tolerance {parity.tolerance:.3g})"),
        ("argmax", f"{100 * parity.argmax_agreement:.4f}% agree ({parity.num_ties} ties excluded)"),
        ("time", ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())),
    ]


def check_export_memory(height: int, width: int, *, batch: int = 1, num_samples: int = 4, num_classes: int = 19,
                        meminfo: str | os.PathLike[str] = "/proc/meminfo") -> int | None:
    """Refuse (ConfigError) an export whose estimated peak memory exceeds MemAvailable, before allocating.

    Returns the estimate in bytes, or None where ``meminfo`` has no MemAvailable (not Linux: no check).
    Peak RSS of ``edgeseg export`` measured with /usr/bin/time -v (torch 2.13 CPU, 19 classes):

        hrnet_w18_small_v2_ocr  512x1024: 0.85 GB (1 sample), 1.36 GB (4)   1024x2048: 2.08 GB, 4.43 GB
        shufflenetv2_x0_5_dspp  512x1024: 0.65 GB,            1.13 GB       1024x2048: 1.38 GB, 3.35 GB

    that is ~450 MB of libraries, ~400 B/pixel of activations for the hungriest model (HRNet-OCR; ShuffleNet
    ~160) and ~400 B/pixel per reference sample (~20 B per class: PyTorch and ONNX Runtime logits, their
    comparison). The factors below are ~1.3-1.5x that, so only exports that surely do not fit are refused.
    """
    base, activation_per_pixel, sample_per_pixel_per_class = 512 << 20, 600, 24
    per_pixel = activation_per_pixel * batch + sample_per_pixel_per_class * num_classes * num_samples
    estimate = base + height * width * per_pixel
    available = None
    try:
        with open(meminfo) as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024  # the value is in kB
    except (OSError, ValueError, IndexError):
        return None
    if available is None:
        return None
    if estimate <= available:
        return estimate
    gib = 1 << 30
    scale = ((available - base) / (estimate - base)) ** 0.5 if available > base else 0.0
    smaller = (int(height * scale) // 32 * 32, int(width * scale) // 32 * 32)
    fix = (f"pass a smaller --input-size, e.g. --input-size {smaller[0]}x{smaller[1]}" if min(smaller) >= 32
           else "free memory (close other programs) or export on a machine with more memory")
    raise ConfigError(
        f"exporting at {height}x{width} needs about {estimate / gib:.1f} GiB of memory; "
        f"{available / gib:.1f} GiB is available",
        expected=f"at most {available / gib:.1f} GiB (MemAvailable in {meminfo})",
        found=f"~{estimate / gib:.1f} GiB for {num_samples} reference sample(s) of {num_classes} classes "
              f"at {height}x{width}, batch {batch}",
        fix=fix + (" (or fewer reference samples: --num-samples 1)" if num_samples > 1 else ""),
    )
