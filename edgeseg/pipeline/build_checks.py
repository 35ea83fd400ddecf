"""Everything ``edgeseg build`` can check before it touches its folder (layer 4).

A refused build must not cost the robot its folder: the old manifest.json is removed only when the first
step starts, so every option, dependency, input and name that can be checked up front is checked here
first (``preflight``). What it learns (the ONNX facts, the calibration frames it counted) is kept, so the
build neither reads it twice nor says something else later.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.datasets import parse_dataset_spec
from ..errors import InputError, UsageError, require
from ..images import list_images
from ..quant.calib_data import BagCalibSource, ImageListSource
from ..quant.qdq_ort import check_saved_ranges_support
from ..runtime.bags import BagSampler
from . import build_steps as steps
from .build_data import _labelled
from .options import BuildOptions
from .qat_steps import check_qat_options, qat_model_info, read_qat
from .validation_data import data_samples


@dataclass
class Preflight:
    """What the checks found: the --onnx file's facts (None when exporting) and the calibration frames."""

    onnx_facts: Any | None = None  # (InputSpec, metadata, has Q/DQ) of --onnx
    calib_opened: str = ""  # "folder calib: 64 images", "cityscapes train: 2975 images", "bag x /cam: 40 frames"
    model_info: steps.ModelInfo | None = None  # model, classes, spec of the model to export
    qat: Any | None = None  # --weights is a QAT checkpoint (training.qat_checkpoint.QatCheckpoint): no calibration


def will_calibrate(options: BuildOptions, is_qdq: bool) -> bool:
    return options.precision in ("int8", "best") and not is_qdq


def preflight(options: BuildOptions, backend: str) -> Preflight:
    """Every check that needs no work in the build folder: options (already), dependencies, the model's name
    and weights or the --onnx file, the --val data and the --calib frames. Raises the error the build would
    have raised later, before anything is removed or written."""
    found = Preflight()
    if options.onnx is not None:
        found.onnx_facts = steps.onnx_facts(Path(options.onnx))  # needs onnx: a robot without it stops here
        _, meta, is_qdq = found.onnx_facts
        if is_qdq and (options.fallback == "auto" or options.sensitivity):
            option = "--fallback auto" if options.fallback == "auto" else "--sensitivity"
            raise UsageError(f"{Path(options.onnx).name} is already quantized: {option} re-quantizes the float "
                             "model", found=f"--onnx {options.onnx} (Q/DQ)",
                             fix=f"pass --onnx {shlex.quote(str(Path(options.onnx).parent / 'model.onnx'))} (the float "
                                 f"model), or drop {option}")
        num_classes = int(meta.get("num_classes") or 0) or None
    else:
        require("torch", purpose="exporting the model (build --model/--weights); build --onnx F needs no torch")
        if options.model is not None:
            from ..models import model_info

            model_info(options.model)  # an unknown name fails now, not after rendering frames
        found.qat = read_qat(options.weights)
        if found.qat is not None:
            check_qat_options(options, found.qat)
            found.model_info = qat_model_info(found.qat)
        else:
            found.model_info = steps.model_info(options)  # the checkpoint agrees with --model (same errors as later)
        is_qdq, num_classes = False, found.model_info.num_classes
    calibrating = will_calibrate(options, is_qdq) and found.qat is None
    if calibrating:
        _check_cpu_int8_writer()
    if options.val is not None:
        _check_val(options, num_classes)
    if options.calib is not None and (calibrating or (options.onnx is None and options.val is None
                                                      and not options.demo)):
        found.calib_opened = describe_calib(options.calib)  # the frames exist (and a bag's topic resolves)
    return found


def _check_cpu_int8_writer() -> None:
    """onnx and an onnxruntime that writes the CPU INT8 model from saved ranges (>= 1.27)."""
    require("onnx", purpose="calibrating and quantizing")
    check_saved_ranges_support(require("onnxruntime.quantization.calibrate", purpose="ONNX Runtime INT8 models"))


def _check_val(options: BuildOptions, num_classes: int | None) -> None:
    """The --val data opens (listed, not read) as the step that uses it will open it."""
    if options.onnx is not None:  # scored by validate against reference.npz's classes

        if num_classes:
            data_samples(options.val, None, num_classes)  # type: ignore[arg-type]
        return

    _labelled(options.val, int(num_classes or 0))  # type: ignore[arg-type]


def describe_calib(calib: Any) -> str:
    """What --calib opened, as the summary prints it; an InputError when it holds no frames."""
    if isinstance(calib, BagCalibSource):
        sampler = BagSampler(calib.path, calib.topic, 1)  # resolves the topic (several and no --topic: listed)
        return f"bag {calib.path} {sampler.topic}: {sampler.messages} frames"
    if isinstance(calib, ImageListSource):
        if not calib.paths:
            raise InputError(f"--calib {calib.label} has no images", expected="a split with images",
                             fix="pass another split (KIND:ROOT:split) or an image folder")
        return f"{_dataset_name(calib.label)}: {_images(len(calib.paths))}"
    images = list_images(calib)
    if not images:
        raise InputError(f"no images in --calib {calib}", expected="*.jpg / *.png files (searched recursively)",
                         fix="pass --calib DIR with frames from the robot's camera")
    return f"folder {calib}: {_images(len(images))}"


def _images(count: int) -> str:
    return f"{count} image" + ("" if count == 1 else "s")


def _dataset_name(label: str) -> str:
    """"cityscapes train" for the --calib spec cityscapes:ROOT (a public dataset calibrates on train unless a
    split is named), "folder DIR val" for DIR:val."""
    spec = parse_dataset_spec(label)
    if spec.is_folder:
        return f"folder {spec.root}" + (f" {spec.split}" if spec.split else "")
    return f"{spec.kind} {spec.split or 'train'}"


def check_backend_precision(backend: str, precision: str) -> None:
    """--precision fp16 asks for TensorRT: an option this machine cannot honour (exit 2, before any work)."""
    if backend == "openvino" and precision == "fp16":
        raise UsageError("--precision fp16 is TensorRT's; on OpenVINO --precision best tries the fp16 and bf16 "
                         "inference hints where the CPU has them", found="--backend openvino",
                         fix="use --precision best, int8 or fp32 with --backend openvino")
    if backend == "onnxruntime" and precision == "fp16":
        raise UsageError("--precision fp16 needs TensorRT; ONNX Runtime on the CPU runs fp32 or int8",
                         found="no TensorRT here (backend onnxruntime)",
                         fix="use --precision int8, fp32 or best here, and fp16 when building on the Jetson")


__all__ = ["Preflight", "preflight", "describe_calib", "check_backend_precision", "will_calibrate"]
