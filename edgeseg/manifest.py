"""``manifest.json``: what a build folder holds, and what it promises (layer 0: stdlib + numpy).

The one owner of the manifest: schema (``Manifest``), writing (``write_manifest``, always
the last file a build writes, atomically, with a checksum), reading (``read_manifest``:
checksum and field types checked, an error naming the fix when there is none), and the
checks a robot runs before loading a model file (``verified_artifact``: the file's
SHA-256 against the recorded one; ``check_validated``: the build's gate verdict).

A manifest states this build's verdict on one candidate file in ``validation``:
``status`` is ``passed``, ``failed`` or ``not_run``, with the candidate's role and
SHA-256 and the gate results. Any other file of the folder has no verdict.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from shlex import quote
from typing import Any

from . import __version__
from .errors import ArtifactError
from .fileio import atomic_write_json, read_json, sha256_file
from .spec import InputSpec

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 2  # 2: validation verdict and checksum
VALIDATION_STATUSES = ("passed", "failed", "not_run")
# role -> precision of the file that plays it (the engine's comes from the manifest)
ROLE_PRECISION = {"onnx": "fp32", "onnx_int8_cpu": "int8", "onnx_int8_trt": "int8 (Q/DQ)",
                  "onnx_int8_ov": "int8 (Q/DQ)"}
ALLOW_FLAG = "--allow-unvalidated"
PARITY_KEYS = (  # the parity figures the accuracy section records
    "agreement", "max_abs_error", "mean_abs_error", "cosine_similarity", "miou_vs_reference", "images")
_RUNNER_KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms")


@dataclass
class ValidationVerdict:
    """The manifest's ``validation`` section: this build's verdict on the one candidate file it validated.

    ``status`` is ``passed``, ``failed`` or ``not_run`` (``why`` then says why). JSON only through
    ``to_dict``/``from_dict``, in the shape manifests have always had (not_run: no gate fields)."""

    status: str = "not_run"
    candidate: str | None = None  # the role of the validated file
    candidate_file: str = ""
    candidate_sha256: str = ""
    why: str = ""
    reference: str = ""
    reference_kind: str | None = None
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    min_agreement: float | None = None
    max_miou_drop: float | None = None

    def to_dict(self) -> dict[str, Any]:
        base: dict[str, Any] = {"candidate": self.candidate, "candidate_file": self.candidate_file,
                                "candidate_sha256": self.candidate_sha256}
        if self.status == "not_run":
            return {**base, "status": self.status, "why": self.why}
        return {**base, "status": self.status, "reference": self.reference, "reference_kind": self.reference_kind,
                "failures": list(self.failures), "skipped": list(self.skipped),
                "min_agreement": self.min_agreement, "max_miou_drop": self.max_miou_drop}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValidationVerdict:
        role = data.get("candidate")
        return cls(status=str(data.get("status", "not_run")), candidate=str(role) if role else None,
                   candidate_file=str(data.get("candidate_file", "")),
                   candidate_sha256=str(data.get("candidate_sha256", "")), why=str(data.get("why") or ""),
                   reference=str(data.get("reference") or ""), reference_kind=data.get("reference_kind"),
                   failures=[str(f) for f in data.get("failures") or []],
                   skipped=[str(s) for s in data.get("skipped") or []],
                   min_agreement=data.get("min_agreement"), max_miou_drop=data.get("max_miou_drop"))


@dataclass
class AccuracySummary:
    """The manifest's ``accuracy`` section: the candidate's parity with PyTorch (and the ground truth's
    figures, ``gt_*`` in JSON) from this build's validation. A parity figure the validation did not
    measure is None and absent from the JSON."""

    gates_passed: bool
    agreement: float | None = None
    max_abs_error: float | None = None
    mean_abs_error: float | None = None
    cosine_similarity: float | None = None
    miou_vs_reference: float | None = None
    images: int | None = None
    ground_truth: dict[str, float] = field(default_factory=dict)  # e.g. miou_candidate (gt_miou_candidate)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {k: getattr(self, k) for k in PARITY_KEYS if getattr(self, k) is not None}
        data.update({f"gt_{k}": v for k, v in self.ground_truth.items()})
        data["gates_passed"] = self.gates_passed
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AccuracySummary:
        return cls(gates_passed=bool(data.get("gates_passed", False)),
                   ground_truth={k[3:]: v for k, v in data.items() if k.startswith("gt_")},
                   **{k: data[k] for k in PARITY_KEYS if k in data})


@dataclass
class RunnerLatency:
    """One runner's latency percentiles in the manifest's ``latency`` section (milliseconds)."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float


@dataclass
class LatencySummary:
    """The manifest's ``latency`` section: each runner's latency from this build's bench."""

    runners: dict[str, RunnerLatency] = field(default_factory=dict)
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"runners": {name: asdict(r) for name, r in self.runners.items()}, "threads": self.threads}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencySummary:
        runners = data.get("runners") or {}
        return cls(runners={str(name): RunnerLatency(**{k: r.get(k, 0.0) for k in _RUNNER_KEYS})
                            for name, r in runners.items()}, threads=data.get("threads"))


@dataclass
class FallbackSummary:
    """The manifest's ``calibration.fallback``: the outcome of the float-fallback search, not every trial
    (fallback.json has those)."""

    passed: bool
    kept: list[str]  # the layers kept in float
    precision_of_kept: str
    cap: int
    next_layers: list[str]  # the layers the search would try next
    latency_ms: dict[str, Any]  # p50 per candidate on the CPU, or a note
    trials: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FallbackSummary:
        return cls(passed=bool(data["passed"]), kept=[str(n) for n in data.get("kept") or []],
                   precision_of_kept=str(data.get("precision_of_kept", "")), cap=int(data.get("cap", 0)),
                   next_layers=[str(n) for n in data.get("next_layers") or []],
                   latency_ms=dict(data.get("latency_ms") or {}), trials=int(data.get("trials", 0)))


@dataclass
class QatSummary:
    """The manifest's ``calibration.qat``: the INT8 files come from a QAT checkpoint (edgeseg qat), not from a
    calibration. reference.npz then holds the QAT model's verdict, so the gates hold every candidate to the QAT
    model; the float checkpoint it was fine-tuned from and the validation figures of its run are kept here."""

    checkpoint: str  # the qat.pt built from
    float_checkpoint: dict[str, str]  # path, sha256 of the float weights QAT started from
    reference: str  # what reference.npz's verdict is: "qat" (the fake-quant graph in PyTorch)
    epochs: int
    float_miou: float  # validation mIoU of the float model during the QAT run (model input size)
    ptq_miou: float  # ... of the calibrated INT8 graph (epoch 0)
    qat_miou: float  # ... of the QAT model
    ptq_agreement: float  # the PTQ graph's argmax agreement with the float model on those images
    qat_agreement: float  # the QAT model's

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QatSummary:
        return cls(checkpoint=str(data["checkpoint"]), float_checkpoint=dict(data.get("float_checkpoint") or {}),
                   reference=str(data.get("reference", "qat")), epochs=int(data.get("epochs", 0)),
                   float_miou=float(data.get("float_miou", 0.0)), ptq_miou=float(data.get("ptq_miou", 0.0)),
                   qat_miou=float(data.get("qat_miou", 0.0)), ptq_agreement=float(data.get("ptq_agreement", 0.0)),
                   qat_agreement=float(data.get("qat_agreement", 0.0)))


_CALIBRATION_KEYS = ("method", "folder", "images", "skipped", "tensors", "seconds", "bag", "fallback", "concat_scales",
                     "high_precision", "float_regions", "trt_fusion", "float_layers", "qat")


@dataclass
class CalibrationSummary:
    """The manifest's ``calibration`` section: how the INT8 files were made (the calibrate, fallback and quantize
    steps' results, assembled by pipeline/build._int8_models). A field None is absent from the JSON (a folder's
    calibration has no ``bag``, a build without ``--fallback auto`` no ``fallback``); keys this edgeseg does not
    know (an older or newer build's) are kept in ``extra`` and written back as they were."""

    method: str | None = None
    folder: str | None = None  # the calibration source as given
    images: int | None = None  # frames used
    skipped: list[list[str]] | None = None  # [file, why] of the frames left out
    tensors: int | None = None  # activation ranges computed
    seconds: dict[str, float] | None = None  # per phase
    bag: dict[str, Any] | None = None  # a bag's path, topic, storage and frame stamps
    fallback: FallbackSummary | None = None
    concat_scales: str | None = None
    high_precision: str | None = None  # what was asked; float_regions: what the file holds
    float_regions: dict[str, Any] | None = None
    trt_fusion: dict[str, Any] | None = None  # predicted TensorRT fusion of model.int8.onnx
    float_layers: list[str] | None = None
    qat: QatSummary | None = None  # the INT8 files come from a QAT checkpoint (no calibration ran)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key in _CALIBRATION_KEYS:
            value = getattr(self, key)
            if value is not None:
                data[key] = value.to_dict() if isinstance(value, (FallbackSummary, QatSummary)) else value
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationSummary:
        values = {k: data[k] for k in _CALIBRATION_KEYS if k in data}
        if isinstance(values.get("fallback"), Mapping):
            values["fallback"] = FallbackSummary.from_dict(values["fallback"])
        if isinstance(values.get("qat"), Mapping):
            values["qat"] = QatSummary.from_dict(values["qat"])
        return cls(**values, extra={k: v for k, v in data.items() if k not in _CALIBRATION_KEYS})


@dataclass
class Manifest:
    """What a build folder holds and what it was built from/for."""

    model: str
    num_classes: int
    input_spec: InputSpec
    classes: list[str] = field(default_factory=list)
    class_colors: list[list[int]] = field(default_factory=list)  # the training data's colours ([]: the palette's)
    precision: str = "fp32"
    backend: str = "onnxruntime"
    artifacts: dict[str, str] = field(default_factory=dict)  # role -> file name
    hashes: dict[str, str] = field(default_factory=dict)  # role -> sha256
    tensorrt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None
    io_tensors: list[dict[str, Any]] = field(default_factory=list)
    calibration: CalibrationSummary | None = None  # None: {} in JSON (not quantized here)
    accuracy: AccuracySummary | None = None  # None: {} in JSON (not validated)
    latency: LatencySummary | None = None  # None: {} in JSON (not benched)
    build: dict[str, Any] = field(default_factory=dict)  # TensorRT build flags (version/hardware compatible...)
    validation: ValidationVerdict | None = None  # None: {} in JSON (no verdict recorded: not_run)
    edgeseg_version: str = ""
    format: int = MANIFEST_FORMAT

    def __post_init__(self) -> None:
        if not self.edgeseg_version:
            self.edgeseg_version = __version__

    @property
    def validation_status(self) -> str:
        return self.validation.status if self.validation is not None else "not_run"

    @property
    def validated_role(self) -> str | None:
        return self.validation.candidate if self.validation is not None else None

    def precision_of(self, role: str) -> str:
        return self.precision if role == "engine" else ROLE_PRECISION.get(role, "unknown")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_spec"] = self.input_spec.to_dict()
        for key in ("calibration", "accuracy", "latency", "validation"):  # typed sections, in their JSON shape
            section = getattr(self, key)
            data[key] = section.to_dict() if section is not None else {}
        return data

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "manifest") -> Manifest:
        if not isinstance(data, dict):
            raise ArtifactError(f"{source} is not a JSON object", found=type(data).__name__)
        fmt = data.get("format")
        if fmt != MANIFEST_FORMAT:
            raise ArtifactError(
                f"{source} has format {fmt!r}, this edgeseg reads format {MANIFEST_FORMAT}",
                found=f"written by edgeseg {data.get('edgeseg_version', 'unknown')}",
                fix="rebuild the folder with this version: edgeseg build --force ...",
            )
        missing = [k for k in ("model", "num_classes", "input_spec") if k not in data]
        if missing:
            raise ArtifactError(f"{source} lacks required fields", found=", ".join(missing),
                                fix="rebuild the folder: edgeseg build --force ...")
        _check_types(data, source)
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}  # newer optional fields: ignored
        if not isinstance(values["input_spec"], dict):
            raise ArtifactError(f"{source}: input_spec is not an object", found=repr(values["input_spec"])[:80])
        values["input_spec"] = InputSpec.from_dict(values["input_spec"])
        for key, section in (("calibration", CalibrationSummary), ("accuracy", AccuracySummary),
                             ("latency", LatencySummary), ("validation", ValidationVerdict)):
            values[key] = section.from_dict(values[key]) if values.get(key) else None
        try:
            return cls(**values)
        except TypeError as exc:
            raise ArtifactError(f"{source} is malformed", found=str(exc)) from None


# field -> (accepted types, what to say) for the fields code relies on
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), "a model name"),
    "num_classes": ((int,), "a whole number of classes"),
    "classes": ((list,), "a list of class names"),
    "class_colors": ((list,), "a list of [r, g, b] class colours"),
    "precision": ((str,), "fp32 | fp16 | int8 | best"),
    "backend": ((str,), "tensorrt | onnxruntime"),
    "artifacts": ((dict,), "an object: role -> file name"),
    "hashes": ((dict,), "an object: role -> sha256"),
    "validation": ((dict,), "an object with the gate verdict"),
    "calibration": ((dict,), "an object saying how the INT8 files were made"),
    "accuracy": ((dict,), "an object with the parity figures"),
    "latency": ((dict,), "an object with the runners' latency"),
}


def _check_types(data: dict[str, Any], source: str) -> None:
    for key, (types, what) in _FIELD_TYPES.items():
        value = data.get(key)
        if key not in data or value is None and key not in ("model", "num_classes"):
            continue
        if not isinstance(value, types) or isinstance(value, bool):
            raise ArtifactError(f"{source}: field {key!r} is not {what}", expected=what, found=repr(value)[:80],
                                fix="rebuild the folder: edgeseg build --force ... (do not edit manifest.json)")
    if data["num_classes"] < 1:
        raise ArtifactError(f"{source}: num_classes must be at least 1", found=str(data["num_classes"]))
    for key in ("artifacts", "hashes"):
        if any(not isinstance(v, str) for v in data.get(key, {}).values()):
            raise ArtifactError(f"{source}: {key} must map roles to strings", found=repr(data[key])[:120])


def manifest_checksum(data: dict[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON without its checksum field."""
    body = {k: v for k, v in data.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def write_manifest(folder: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Write ``folder/manifest.json`` atomically, with its checksum."""
    data = json.loads(json.dumps(manifest.to_dict(), default=str))  # the exact JSON the checksum covers
    data["checksum"] = manifest_checksum(data)
    return atomic_write_json(Path(folder) / MANIFEST_FILE, data)


def read_manifest(folder_or_file: str | os.PathLike[str], *, verify: bool = True) -> Manifest:
    """The manifest of a build folder (or the file itself); ArtifactError when absent, edited or malformed."""
    path = Path(folder_or_file)
    if path.is_dir() or not path.name.endswith(".json"):
        path = path / MANIFEST_FILE
    if not path.is_file():
        raise missing_manifest_error(path.parent)
    try:
        data = read_json(path, what="manifest")
    except ArtifactError as exc:  # not JSON (cut short, overwritten): the folder's promise is unreadable
        onnx = path.parent / "model.onnx"
        rebuild = (f"edgeseg build --onnx {quote(str(onnx))} --out {quote(str(path.parent))} --force"
                   if onnx.is_file() else f"edgeseg build ... --out {quote(str(path.parent))} --force")
        raise ArtifactError(f"{path} is corrupt: not the JSON edgeseg build writes", found=exc.found,
                            fix=f"rebuild the folder with the command that built it plus --force (e.g. {rebuild}), "
                                "or copy the build folder again") from None
    if verify and isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT:
        recorded = data.get("checksum")
        if recorded != manifest_checksum(data):
            raise ArtifactError(f"{path} was changed after the build (its checksum does not match)",
                                expected=f"checksum {str(recorded)[:16]}...", found="edited content",
                                fix="rebuild the folder (edgeseg build ... --force), or restore the file as built")
    return Manifest.from_dict(data, source=str(path))


def find_manifest(folder: str | os.PathLike[str], *, verify: bool = True) -> Manifest | None:
    """The folder's manifest, or None when it has none (a corrupt or edited one is an error)."""
    if not (Path(folder) / MANIFEST_FILE).is_file():
        return None
    return read_manifest(folder, verify=verify)


# what only `edgeseg build` leaves in a folder (pipeline/step_cache.STATE_FILE, lock.LOCK_FILE): a build began there
BUILD_TRACES = ("steps.json", ".edgeseg.lock")
BUILD_STEPS = ("export", "calibrate", "fallback", "sensitivity", "quantize", "engine", "select", "validate", "bench")


def missing_manifest_error(folder: Path) -> ArtifactError:
    if any((folder / name).is_file() for name in BUILD_TRACES):
        steps = _steps_done(folder / BUILD_TRACES[0])
        onnx = folder / "model.onnx"
        example = (f"; with the default options that is: edgeseg build --onnx {quote(str(onnx))} --out "
                   f"{quote(str(folder))}") if onnx.is_file() else ""
        return ArtifactError(f"{folder} is not a finished build folder: the build there did not finish (it stopped "
                             f"before writing {MANIFEST_FILE}: interrupted with Ctrl-C, or refused by an error)",
                             expected=f"{folder / MANIFEST_FILE}",
                             found="steps done: " + (", ".join(steps) if steps else "none") + f"; no {MANIFEST_FILE}",
                             fix=f"resume it: run the same edgeseg build command again with --out {quote(str(folder))} "
                                 "(the steps already done are skipped, so only the rest runs)" + example)
    if (folder / "model.onnx").is_file():
        fix = ("this folder holds an export, not a build: build and validate it with "
               + "edgeseg build --onnx " + quote(str(folder / "model.onnx")))
        found = "model.onnx" + (" and reference.npz" if (folder / "reference.npz").is_file() else "") + ", no manifest"
    else:
        fix, found = "build the folder first: edgeseg build ... --out " + quote(str(folder)), "no manifest.json"
    return ArtifactError(f"{folder} is not a finished build folder", expected=f"{folder / MANIFEST_FILE}",
                         found=found, fix=fix)


def _steps_done(path: Path) -> list[str]:
    """The build steps a steps.json records as done ([] when it is absent or unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    done = [name for name, record in data.items() if isinstance(record, dict)]
    return sorted(done, key=lambda name: (BUILD_STEPS.index(name) if name in BUILD_STEPS else len(BUILD_STEPS), name))


def verified_artifact(folder: str | os.PathLike[str], manifest: Manifest, role: str) -> Path:
    """The file playing ``role``, after checking its SHA-256 against the manifest."""
    root = Path(folder)
    name = manifest.artifacts.get(role)
    if not name or not (root / name).is_file():
        raise ArtifactError(f"{root} has no {role} file", expected=f"{name or role} named in {MANIFEST_FILE}",
                            found="missing", fix="rebuild the folder: edgeseg build ...")
    recorded = manifest.hashes.get(role)
    if recorded is None:
        raise ArtifactError(f"{MANIFEST_FILE} records no checksum for {name}", expected=f"hashes.{role}",
                            found="none", fix="rebuild the folder with this version: edgeseg build --force ...")
    actual = sha256_file(root / name)
    if actual != recorded:
        raise ArtifactError(f"{root / name} is not the file the build checked (its SHA-256 differs)",
                            expected=recorded[:16] + "...", found=actual[:16] + "...",
                            fix="copy the whole build folder again, or rebuild it: edgeseg build ...")
    return root / name


def validation_verdict(*, role: str | None, candidate_file: str, candidate_sha256: str,
                       gates: Mapping[str, Any] | None, reference: str = "", reference_kind: str | None = None,
                       why: str = "") -> ValidationVerdict:
    """The manifest's ``validation`` section: this run's verdict on the one candidate it validated.

    ``gates`` is the validation's gate outcome (``passed``, ``failures``, ``skipped``, ``min_agreement``,
    ``max_miou_drop``: validation.json's ``gates``), None when nothing was validated (``why`` says why): the
    status is then ``not_run``. The one place the verdict is computed; the robot reads it back through
    ``validation_problem``/``check_validated``."""
    if gates is None:
        return ValidationVerdict(status="not_run", candidate=role, candidate_file=candidate_file,
                                 candidate_sha256=candidate_sha256, why=why or "not validated")
    return ValidationVerdict(status="passed" if gates.get("passed") else "failed", candidate=role,
                             candidate_file=candidate_file, candidate_sha256=candidate_sha256, reference=reference,
                             reference_kind=reference_kind, failures=[str(f) for f in gates.get("failures", [])],
                             skipped=[str(s) for s in gates.get("skipped", [])],
                             min_agreement=gates.get("min_agreement"), max_miou_drop=gates.get("max_miou_drop"))


def validation_problem(manifest: Manifest, role: str) -> str | None:
    """Why the file playing ``role`` cannot be trusted, or None when the build validated it and it passed."""
    status = manifest.validation_status
    validated = manifest.validated_role
    name = manifest.artifacts.get(role, role)
    if status == "passed" and validated == role:
        return None
    verdict = manifest.validation or ValidationVerdict()
    if status == "failed" and validated == role:
        failures = "; ".join(verdict.failures) or "see validation.json"
        return f"{name} failed the build's accuracy gates ({failures})"
    if status == "passed":
        other = manifest.artifacts.get(validated or "", validated)
        return f"the build validated {other}, not {name}"
    why = verdict.why or "the build stopped before validation"
    return f"{name} was not validated against PyTorch ({why})"


def check_validated(manifest: Manifest, role: str, *, allow_unvalidated: bool, folder: str | os.PathLike[str]
                    ) -> str | None:
    """Refuse a file without a passing verdict unless allowed; returns the warning to show when allowed."""
    problem = validation_problem(manifest, role)
    if problem is None:
        return None
    if allow_unvalidated:
        return f"warning: {problem}; running it anyway ({ALLOW_FLAG})"
    raise ArtifactError(f"{folder}: refusing to run an unvalidated model", found=problem,
                        fix=f"rebuild until the gates pass (edgeseg build ...), or pass {ALLOW_FLAG} "
                            "(Segmenter.from_artifacts(..., allow_unvalidated=True)) to run it anyway")
