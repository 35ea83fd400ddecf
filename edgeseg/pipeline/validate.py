"""Validate a candidate (ONNX, Q/DQ INT8, CPU INT8 or TensorRT engine) against PyTorch (layer 4).

The candidate and the reference see the SAME preprocessed inputs (``spec.preprocess``
with the one input spec they must agree on). The reference is either ``reference.npz``
(PyTorch logits saved at export: no torch needed, works on the robot) or the PyTorch
model itself (torch imported only then). With ``data_dir`` holding masks, both are also
scored against ground truth. Gates turn a miss into an ``AccuracyError`` (exit 1) after
``validation.json`` and the disagreement overlays are written.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import typing
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..data.datasets import SpecLike
from ..errors import AccuracyError, ArtifactError, EdgesegError, require
from ..fileio import atomic_write_json, read_json
from ..images import save_png
from ..onnx_model import OnnxModelInfo, read_onnx_model
from ..palette import class_palette, stored_colours
from ..parity import ParityTally
from ..quant.ranges import METHODS
from ..reference import load_reference
from ..report.plots import disagreement_overlay
from ..runtime.torch_backend import TorchBackend
from ..spec import InputSpec, preprocess, resize_mask_nearest
from .artifacts import candidate_input_spec, load_manifest, open_backend
from .options import ValidationConfig
from .step_cache import known_fields
from .validation_data import data_samples, synthetic_samples

T = TypeVar("T")
# progress(items, label=..., length=...); typing's generics: the alias is evaluated at import, on Python 3.8 too
Progress = typing.Callable[..., typing.Iterable[Any]]
VALIDATION_FILE = "validation.json"
OVERLAY_DIR = "validation_overlays"
FLOAT_FIX = "check that the candidate was exported from these weights (edgeseg export --weights F)"


@dataclass
class TorchReference:
    """Run the PyTorch model as the reference: an edgeseg checkpoint or plain weights + a model name."""

    weights: Path
    model: str | None = None
    num_classes: int | None = None


@dataclass
class ValidationResult:
    candidate: str
    reference: str
    reference_kind: str  # "reference.npz" or "pytorch"
    input_spec: InputSpec
    num_classes: int
    classes: list[str]
    parity: dict[str, Any]  # max/mean abs error, cosine, agreement, miou_vs_reference
    ground_truth: dict[str, Any] | None
    per_class: list[dict[str, Any]]
    per_image: list[dict[str, Any]]
    gates: dict[str, Any]
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    not_written: str = ""  # why validation.json and the overlays were not written (files_optional), else ""

    @property
    def passed(self) -> bool:
        return bool(self.gates["passed"])

    def to_dict(self) -> dict[str, Any]:
        recorded = asdict(self)
        recorded.pop("not_written")
        recorded["input_spec"] = self.input_spec.to_dict()
        return recorded

    @classmethod
    def from_dict(cls, data: Any) -> ValidationResult:
        """The inverse of ``to_dict`` (validation.json, the build's step cache); ``not_written`` is not recorded."""
        required = [f.name for f in fields(cls) if f.name not in ("notes", "files", "not_written")]
        missing = [name for name in required if name not in data]
        if missing:
            raise KeyError(f"a validation record without {', '.join(missing)}")
        values = known_fields(cls, data, skip=("not_written",))
        values["input_spec"] = InputSpec.from_dict(values["input_spec"])
        return cls(**values)


def validate_candidate(
    candidate_path: str | os.PathLike[str],
    reference: str | os.PathLike[str] | TorchReference,
    *,
    data_dir: SpecLike | None = None,
    config: ValidationConfig | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    write: bool = True,
    raise_on_failure: bool = True,
    files_optional: bool = False,
    backend: str = "auto",
    backend_options: dict[str, Any] | None = None,
) -> ValidationResult:
    """Compare ``candidate_path`` with the reference; write validation.json + overlays into
    ``out_dir`` (default: the candidate's folder); raise AccuracyError if a gate is missed.
    ``files_optional``: a read-only ``out_dir`` leaves the files unwritten (``result.not_written`` says why)
    instead of failing: the verdict does not need them (``edgeseg validate`` on a read-only robot folder).
    ``backend``: the registered runtime that runs the candidate (auto: by its suffix), ``backend_options`` its
    factory's options (OpenVINO: inference_precision, device)."""
    config = config or ValidationConfig()
    config.check()
    candidate = Path(candidate_path)
    show = progress or _no_progress
    runtime = open_backend(candidate, threads=config.threads, backend=backend, **(backend_options or {}))
    try:
        if isinstance(reference, TorchReference):
            compared = _against_pytorch(reference, runtime, candidate, data_dir, config, show)
        else:
            compared = _against_reference_file(Path(reference), runtime, candidate, data_dir, config, show)
    finally:
        runtime.close()
    tally, spec, notes = compared.tally, compared.spec, compared.notes
    ref_label, kind = compared.label, compared.kind
    classes, data_classes = compared.classes, compared.data_classes
    classes = _class_names(classes or data_classes, tally.num_classes)
    result = ValidationResult(
        candidate=str(candidate), reference=ref_label, reference_kind=kind, input_spec=spec,
        num_classes=tally.num_classes, classes=classes, parity=tally.summary(),
        ground_truth=tally.truth_summary(), per_class=tally.per_class(classes), per_image=tally.per_image,
        gates=check_gates(tally.summary(), tally.truth_summary(), config), config=asdict(config), notes=notes,
    )
    if write:
        out = Path(out_dir) if out_dir is not None else candidate.parent
        try:
            result.files = [str(p) for p in write_overlays(out, tally, tally.num_classes, compared.colours)]
            result.files.insert(0, str(atomic_write_json(out / VALIDATION_FILE, result.to_dict())))
        except OSError as exc:
            if not files_optional or exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            result.not_written = f"{out} is not writable ({exc.strerror})"  # the verdict stands without the files
    if raise_on_failure and not result.passed:
        raise gate_error(result)
    return result


@dataclass
class _Compared:
    """What one reference kind measured: the tally and how to describe it."""

    tally: ParityTally
    spec: InputSpec
    label: str
    kind: str
    classes: list[str]
    data_classes: list[str]
    notes: list[str]
    colours: list[list[int]] = field(default_factory=list)  # the candidate's class colours, else the data's


def _against_pytorch(reference: TorchReference, backend: Any, candidate: Path, data_dir: Any,
                     config: ValidationConfig, show: Progress) -> _Compared:
    """Run the PyTorch model and the candidate on the same frames (--data, else synthetic scenes)."""
    info = _onnx_facts(candidate)
    cand_spec, cand_source = candidate_input_spec(candidate, info)
    notes: list[str] = []
    model, weights = _torch_model(reference, _output_classes(backend))
    ckpt_spec = weights.input_spec
    if ckpt_spec is not None and cand_spec is not None:
        # fully convolutional: a model trained at one size may be exported at another;
        # what must agree is the normalisation and channel order
        ckpt_spec = replace(ckpt_spec, height=cand_spec.height, width=cand_spec.width,
                            input_name=cand_spec.input_name, output_name=cand_spec.output_name)
    spec = agree_on_spec([(cand_spec, cand_source), (ckpt_spec, f"checkpoint {reference.weights}")])
    classes = _candidate_classes(candidate, info) or list(weights.classes)
    tally = ParityTally(weights.num_classes, keep_worst=config.worst_k)
    _check_input_shape(backend, spec, candidate)
    samples = (data_samples(data_dir, config.max_images, weights.num_classes) if data_dir
               else synthetic_samples(spec, notes))
    notes += [samples.summary] if samples.summary else []
    run_reference = _torch_runner(model, spec)
    try:
        for name, frame, truth in show(samples.items, label="validating", length=samples.count):
            x = preprocess(frame, spec, "RGB")
            truth_small = resize_mask_nearest(truth, spec.height, spec.width) if truth is not None else None
            tally.add(name, run_reference.infer(x), backend.infer(x), frame, truth_small)
    finally:
        run_reference.close()
    colours = _candidate_colours(candidate, info) or [list(c) for c in samples.colours]
    return _Compared(tally, spec, str(reference.weights), "pytorch", classes, samples.classes, notes, colours)


def _against_reference_file(reference: Path, backend: Any, candidate: Path, data_dir: Any,
                            config: ValidationConfig, show: Progress) -> _Compared:
    """The candidate on reference.npz's frames against PyTorch's saved verdict (and its masks, when kept);
    ``data_dir`` adds ground-truth scores of the candidate alone."""
    info = _onnx_facts(candidate)
    cand_spec, cand_source = candidate_input_spec(candidate, info)
    notes: list[str] = []
    ref = load_reference(reference)
    spec = agree_on_spec([(cand_spec, cand_source), (ref.input_spec, f"{reference.name} meta")])
    _check_input_shape(backend, spec, candidate)
    _check_reference_model(ref, candidate, reference, info)
    if ref.synthetic:
        notes.append(f"{reference.name} holds synthetic shapes, not scenes: agreement on them says "
                     "little; edgeseg build writes one from --val-data or calibration images")
    tally = ParityTally(ref.num_classes, keep_worst=config.worst_k)
    count = min(ref.num_samples, config.max_images or ref.num_samples)
    for i in show(range(count), label="validating", length=count):
        truth = ref.masks[i] if ref.masks is not None else None
        tally.add_compact(f"sample_{i:03d}", ref.labels[i], ref.top2[i], backend.infer(ref.inputs(i)),
                          ref.frames[i], truth)
    data_classes: list[str] = []
    colours = _candidate_colours(candidate, info)
    if data_dir is not None:
        samples = data_samples(data_dir, config.max_images, ref.num_classes)
        data_classes = samples.classes
        colours = colours or [list(c) for c in samples.colours]
        notes += [samples.summary] if samples.summary else []
        if samples.with_truth:
            notes.append("ground truth: candidate only (no PyTorch reference on these images; "
                         "pass --model/--weights to run it)")
            for _name, frame, truth in show(samples.items, label="ground truth", length=samples.count):
                pred = _argmax(backend.infer(preprocess(frame, spec, "RGB")))
                tally.add_truth(resize_mask_nearest(truth, spec.height, spec.width), pred, None)
        else:
            notes.append(f"{data_dir} has no masks: no ground-truth scores")
    kind = "reference.npz"
    if ref.meta.get("reference_model") == "qat":
        kind = "reference.npz (the QAT model's verdict)"
        notes += _qat_float_note(ref.meta, tally.truth_summary())
    return _Compared(tally, spec, str(reference), kind, _candidate_classes(candidate, info), data_classes,
                     notes, colours)


def _qat_float_note(meta: dict[str, Any], truth: dict[str, Any] | None) -> list[str]:
    """A QAT build's reference is the QAT model; its drop against the float checkpoint it came from, too."""
    float_miou = meta.get("float_checkpoint_miou")
    if float_miou is None or not truth or truth.get("miou_candidate") is None:
        return ["reference.npz holds the QAT model's verdict: agreement and the mIoU drop are against the QAT model"]
    drop = 100.0 * (float(float_miou) - float(truth["miou_candidate"]))
    return [f"reference.npz holds the QAT model's verdict (the gates hold the candidate to it); against the float "
            f"checkpoint it was fine-tuned from (mIoU {float(float_miou):.2%} on these frames) the candidate's "
            f"mIoU drop is {drop:.2f} points"]


# -- gates ---------------------------------------------------------------------------------
def check_gates(parity: dict[str, Any], truth: dict[str, Any] | None, config: ValidationConfig) -> dict[str, Any]:
    failures, skipped = [], []
    if parity["nonfinite_logits"]:
        failures.append(f"the candidate produced {parity['nonfinite_logits']} non-finite logits (NaN/Inf)")
    if parity["agreement"] < config.min_agreement:
        failures.append(f"argmax agreement {parity['agreement']:.4f} < --min-agreement {config.min_agreement}")
    drop = truth.get("miou_drop_points") if truth else None
    if drop is None or truth is None:
        skipped.append("--max-miou-drop: no ground truth scored by both models")
    elif drop > config.max_miou_drop:
        failures.append(f"mIoU drop {drop:.2f} points (reference {truth['miou_reference'] * 100:.2f}, "
                        f"candidate {truth['miou_candidate'] * 100:.2f}) > --max-miou-drop {config.max_miou_drop}")
    return {"min_agreement": config.min_agreement, "max_miou_drop": config.max_miou_drop,
            "passed": not failures, "failures": failures, "skipped": skipped}


def gate_error(result: ValidationResult) -> AccuracyError:
    parity = result.parity
    return AccuracyError(
        f"{Path(result.candidate).name} failed the accuracy gates against {result.reference_kind}",
        expected=f"argmax agreement >= {result.gates['min_agreement']}, "
                 f"mIoU drop <= {result.gates['max_miou_drop']} points",
        found="; ".join(result.gates["failures"]) + f" (max abs logit error {parity['max_abs_error']:.4g}, "
              f"cosine {parity['cosine_similarity']:.6f})",
        fix=accuracy_fix(Path(result.candidate)) + (f"; see {result.files[0]} and the overlays"
                                                     if result.files else ""),
    )


def _recorded_method(folder: Path) -> str | None:
    """The calibration method of the INT8 files in ``folder`` (ranges.json, else manifest.json), if recorded."""
    for name, keys in (("ranges.json", ("method",)), ("manifest.json", ("calibration", "method"))):
        try:
            value: Any = read_json(folder / name, what=name) if (folder / name).is_file() else None
        except EdgesegError:
            continue
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str):
            return value
    return None


def accuracy_fix(candidate: Path) -> str:
    """What may fix a missed gate for this candidate, naming only what can work: another calibration method
    than the one used, and the float layers of the candidate's own backend (FP32 on the CPU, FP16 on TensorRT)."""
    name = candidate.name.lower()
    if "int8" not in name and candidate.suffix != ".engine":
        return FLOAT_FIX
    used = _recorded_method(candidate.parent)
    others = [m for m in METHODS if m != used]
    onnx = candidate.parent / "model.onnx"
    float_kind = "FP32 on the CPU" if candidate.suffix == ".onnx" and "ort" in name else "FP16 on TensorRT"
    method = (f"another calibration method ({' or '.join(others)}; this one used {used})" if used
              else f"another calibration method ({' | '.join(METHODS)})")
    return (f"re-calibrate with {method} or more --calib-images, or keep the layers that cost the most in float "
            f"({float_kind}): edgeseg build --onnx {shlex.quote(str(onnx))} --int8 --fallback auto")


def accuracy_next_commands(candidate: Path) -> list[str]:
    """Runnable commands after a missed gate: a build that keeps the worst layers in float (an INT8 candidate
    with its float model beside it), else a look at what failed."""
    onnx = candidate.parent / "model.onnx"
    if "int8" in candidate.name.lower() and onnx.is_file():
        return [f"edgeseg build --onnx {shlex.quote(str(onnx))} --int8 --fallback auto"]
    return [f"less {shlex.quote(str(candidate.parent / VALIDATION_FILE))}"]



# -- spec and shapes --------------------------------------------------------------------------
def agree_on_spec(sources: list[tuple[InputSpec | None, str]]) -> InputSpec:
    """The one input spec all known sources agree on; ArtifactError naming the difference."""
    known = [(spec, where) for spec, where in sources if spec is not None]
    if not known:
        raise ArtifactError("no input spec found for the candidate or the reference",
                            expected="input_spec in the ONNX metadata, manifest.json or the reference",
                            fix="export the model with edgeseg export (it records the input spec)")
    first, first_where = known[0]
    for spec, where in known[1:]:
        differ = _spec_differences(first, spec)
        if differ:
            raise ArtifactError(
                "the candidate and the reference were made with different input specs",
                expected=f"{first_where}: " + ", ".join(f"{k}={a}" for k, a, _ in differ),
                found=f"{where}: " + ", ".join(f"{k}={b}" for k, _, b in differ),
                fix="validate against the reference exported with this model (same size, mean/std, channel order)",
            )
    return first


def _spec_differences(a: InputSpec, b: InputSpec) -> list[tuple[str, Any, Any]]:
    out = []
    for key, va in a.to_dict().items():
        vb = b.to_dict()[key]
        same = np.allclose(va, vb, rtol=0, atol=1e-6) if key in ("mean", "std") else va == vb
        if not same:
            out.append((key, va, vb))
    return out


def _check_input_shape(backend: Any, spec: InputSpec, candidate: Path) -> None:
    shape = tuple(getattr(backend, "input_shape", ()) or ())
    if len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[1:]) and shape[1:] != spec.shape[1:]:
        raise ArtifactError(f"{candidate.name} takes inputs of another shape than its input spec",
                            expected=str(spec.shape), found=str(shape),
                            fix="rebuild the candidate from the exported model.onnx")


def _onnx_facts(candidate: Path) -> OnnxModelInfo | None:
    """The candidate's ONNX facts, read once per validation (None for an engine)."""
    return read_onnx_model(candidate) if candidate.suffix.lower() == ".onnx" else None


def _check_reference_model(ref: Any, candidate: Path, path: Path, info: OnnxModelInfo | None) -> None:
    """A reference made from another model is a wrong comparison, not an accuracy loss: say so."""
    model = info.model if info is not None else None
    if model and ref.meta.get("model") and model != ref.meta["model"]:
        raise ArtifactError(f"{path.name} was made from another model than {candidate.name}",
                            expected=f"model {model}", found=f"model {ref.meta['model']}",
                            fix="validate against the reference.npz of the build folder this candidate came from")


def _output_classes(backend: Any) -> int | None:
    shape = tuple(getattr(backend, "output_shape", ()) or ())
    return shape[1] if len(shape) == 4 and isinstance(shape[1], int) and shape[1] > 0 else None


# -- the PyTorch reference (torch imported only here) --------------------------------------------
def _torch_model(ref: TorchReference, candidate_classes: int | None) -> tuple[Any, Any]:
    """(model, CheckpointInfo) of the reference weights: ``edgeseg.models.model_from_weights`` decides."""
    require("torch", purpose="running the PyTorch reference (or pass --reference DIR/reference.npz)")
    from ..models import model_from_weights

    # plain weights without --num-classes: as many classes as the candidate outputs
    return model_from_weights(ref.weights, model=ref.model, num_classes=ref.num_classes,
                              default_num_classes=candidate_classes)


def _torch_runner(model: Any, spec: InputSpec) -> Any:
    """The PyTorch reference as a backend (numpy in, numpy logits out): the runtime's TorchBackend, on the CPU."""
    return TorchBackend(model, spec.shape, device="cpu")


# -- names, overlays ------------------------------------------------------------------------------
def _candidate_classes(candidate: Path, info: OnnxModelInfo | None) -> list[str]:
    try:
        if info is not None and info.classes:
            return list(info.classes)
        manifest = load_manifest(candidate.parent)
        return list(manifest.classes) if manifest else []
    except (ValueError, ArtifactError):
        return []  # names are cosmetic; the spec checks above catch broken artifacts


def _candidate_colours(candidate: Path, info: OnnxModelInfo | None) -> list[list[int]]:
    """The class colours the candidate was exported with (its metadata, else its build's manifest); []: none."""
    try:
        if info is not None and info.class_colors:
            return info.class_colors
        manifest = load_manifest(candidate.parent)
        return stored_colours(manifest.class_colors, manifest.num_classes) if manifest else []
    except (ValueError, ArtifactError):
        return []  # colours are cosmetic


def _class_names(names: list[str], count: int) -> list[str]:
    return [names[i] if i < len(names) else f"class_{i}" for i in range(count)]


def _argmax(logits: np.ndarray) -> np.ndarray:
    return np.asarray(logits)[0].argmax(axis=0).astype(np.uint8)


def write_overlays(out_dir: Path, tally: ParityTally, num_classes: int,
                   colours: Sequence[Sequence[int]] | None = None) -> list[Path]:
    """PNG per kept image (lowest agreement first), masks in ``colours`` (the class palette fills in); stale
    overlays of an earlier run are removed."""
    folder = Path(out_dir) / OVERLAY_DIR
    if folder.is_dir():
        for old in folder.glob("worst_*.png"):
            old.unlink()
    written = []
    for rank, item in enumerate(tally.worst(), start=1):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.name)[:60]
        image = disagreement_overlay(item.frame, item.reference, item.candidate, num_classes,
                                     colours=class_palette(num_classes, colours))
        written.append(save_png(folder / f"worst_{rank:02d}_{safe}.png", image))
    return written


def _no_progress(items: Iterable[T], **_: Any) -> Iterable[T]:
    return items
