"""NVIDIA ModelOpt PyTorch QAT (INT8 default config) of one edgeseg checkpoint: the peer of edgeseg's QAT.

Runs inside the ModelOpt virtual environment (the main benchmark starts it with subprocess):

    /work/modelopt-venv/bin/python benchmarks/modelopt_qat_worker.py --weights CKPT.pt --train DIR \\
        --calib DIR --test DIR --epochs 1,2,4 --batch-size 8 --lr 1e-4 --threads 2 --seed 0 \\
        --calib-images 100 --out DIR

What it measures, per requested epoch count E (and always E = 0, ModelOpt PTQ):

- a fresh model from --weights (float32), quantized by ``mtq.quantize(model, mtq.INT8_DEFAULT_CFG, loop)``
  where ``loop`` runs the first --calib-images images of --calib (max calibration, ModelOpt's default);
- E epochs of fine-tuning with edgeseg's QAT recipe: ``SegmentationDataset(train=True, seed)`` with
  ``set_epoch`` per epoch, batch --batch-size shuffled by a generator seeded ``seed * 1000 + epoch``,
  drop_last, no loader workers; pixel cross-entropy (ignore 255); AdamW (weight decay 0) with the learning
  rate decayed from --lr to 0 by a cosine over this run's steps, no warm-up; ``model.train()`` as ModelOpt's
  QAT guide does (BatchNorm stays a separate float module: batch statistics, running stats updated);
- the fake-quant model (eval mode) on --test: argmax labels (uint8 N x H x W at the model input size) in
  OUT/modelopt_qat_{E}ep.npz (keys ``labels``, ``files``), scored by the main benchmark.

Every run starts again from the float checkpoint and has its own full cosine schedule (as edgeseg's side
does), so E = 1, 2, 4 costs 7 epochs. OUT/modelopt_qat.json (rewritten after each run) holds the runs'
timings and losses, versions, the quantizer layout ModelOpt chose, the machine and its load. One QAT model
is exported with ``torch.onnx.export`` (Q/DQ ONNX) to OUT/modelopt_qat_{E}ep.onnx; a failure is noted in
the json. Progress goes to stderr. --max-steps / --max-test cut the work down for smoke tests.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import modelopt  # noqa: E402
import modelopt.torch.quantization as mtq  # noqa: E402
from modelopt.torch.quantization.nn import TensorQuantizer  # noqa: E402

from edgeseg.data.datasets import open_dataset  # noqa: E402
from edgeseg.data.folder import FolderDataset  # noqa: E402
from edgeseg.data.torch_dataset import SegmentationDataset  # noqa: E402
from edgeseg.metrics import IGNORE_INDEX  # noqa: E402
from edgeseg.models import model_from_weights  # noqa: E402
from edgeseg.spec import InputSpec  # noqa: E402

# What was pip-installed into the ModelOpt venv so that `import modelopt.torch.quantization` works (0.47.0
# imports requests and huggingface_hub unconditionally but does not declare them), with their dependencies;
# pillow: edgeseg reads images with it (the version of the main interpreter).
INSTALLED_FOR_WORKER = ("requests", "urllib3", "idna", "charset-normalizer", "certifi", "huggingface_hub",
                        "anyio", "click", "h11", "hf-xet", "httpcore2", "httpx2", "truststore", "pillow")
VERSIONED = ("nvidia-modelopt", "torch", "numpy", "onnx", "onnxruntime-gpu", "pydantic")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--weights", type=Path, required=True, help="edgeseg checkpoint (.pt)")
    parser.add_argument("--train", type=Path, required=True, help="edgeseg folder dataset for fine-tuning")
    parser.add_argument("--calib", type=Path, required=True, help="edgeseg folder dataset for calibration")
    parser.add_argument("--test", type=Path, required=True, help="edgeseg folder dataset to predict")
    parser.add_argument("--epochs", default="1,2,4", help="comma-separated epoch counts, one run each")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calib-images", type=int, default=100)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-steps", type=int, default=None, help="smoke tests: steps per epoch at most")
    parser.add_argument("--max-test", type=int, default=None, help="smoke tests: first N test images only")
    parser.add_argument("--onnx-epochs", type=int, default=None,
                        help="which run to export to ONNX (default: the largest epoch count; -1: none)")
    args = parser.parse_args(argv)
    try:
        args.epoch_list = sorted({int(v) for v in args.epochs.split(",") if v.strip()})
    except ValueError:
        parser.error(f"--epochs must be comma-separated integers, not {args.epochs!r}")
    if not args.epoch_list or min(args.epoch_list) < 0:
        parser.error("--epochs needs at least one count, none negative")
    return args


# ---------------------------------------------------------------- facts
def versions() -> dict[str, Any]:
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "modelopt": modelopt.__version__,
        "torch": torch.__version__,
        "packages": {name: version(name) for name in VERSIONED},
        "installed_for_worker": {name: version(name) for name in INSTALLED_FOR_WORKER},
    }


def machine() -> dict[str, Any]:
    model_name = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False, timeout=10).stdout
        model_name = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                           if line.startswith("Model name")), "")
    except (OSError, subprocess.SubprocessError):
        pass
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
    return {"cpu": model_name, "cpu_count": os.cpu_count(), "flags": {flag: flag in flags for flag in wanted},
            "platform": platform.platform()}


def quantizer_summary(model: torch.nn.Module) -> dict[str, Any]:
    """Which modules got quantizers, which are enabled, their axis (per-channel?) and bits."""
    by_type: dict[str, dict[str, int]] = {}
    disabled: list[str] = []
    axes: dict[str, int] = {}
    for name, module in model.named_modules():
        if not isinstance(module, TensorQuantizer):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        kind = type(parent).__name__
        row = by_type.setdefault(kind, {})
        state = "enabled" if module.is_enabled else "disabled"
        row[f"{attr}_{state}"] = row.get(f"{attr}_{state}", 0) + 1
        if module.is_enabled:
            key = f"{attr} num_bits={module.num_bits} axis={module.axis}"
            axes[key] = axes.get(key, 0) + 1
        elif attr != "output_quantizer" and not kind.startswith("QuantBatchNorm"):
            disabled.append(name)
    return {"by_module_type": by_type, "enabled_quantizer_kinds": axes,
            "disabled_quantizers_not_batchnorm_or_output": disabled}


def config_summary() -> dict[str, Any]:
    cfg = mtq.INT8_DEFAULT_CFG
    return {
        "name": "mtq.INT8_DEFAULT_CFG",
        "algorithm": cfg.get("algorithm"),
        "quant_cfg": json.loads(json.dumps(cfg.get("quant_cfg"), default=str)),
        "notes": (
            "weights: 8-bit symmetric per output channel (axis 0), amax calibrated once (max of |w|) and then "
            "kept fixed as a buffer during QAT (not learned); activations: 8-bit per-tensor input quantizers "
            "(axis None) calibrated by max over the calibration images, also fixed during QAT; no output "
            "quantizers. Gradients: plain straight-through estimator (pass_through_bwd=True by default: no "
            "zeroing outside amax). BatchNorm: wrapped as a quant module with its input quantizer disabled; "
            "not folded into the convolution - in model.train() it uses batch statistics and updates its "
            "running stats, and the conv weight quantizer sees the unfolded conv weights (per-channel scales "
            "let TensorRT fold BN after DQ). Also wrapped: Conv/ConvTranspose/Linear (input+weight), pooling "
            "layers MaxPool/AvgPool/AdaptiveAvgPool (input only), LeakyReLU (disabled), LayerNorm/InstanceNorm "
            "(input); functional ops (interpolate, add, cat, activations) get no quantizer."
        ),
    }


# ---------------------------------------------------------------- data
def folder(path: Path) -> FolderDataset:
    return open_dataset(path)


def eval_loader(data: FolderDataset, spec: InputSpec, batch_size: int, limit: int | None) -> DataLoader:
    dataset: Any = SegmentationDataset(data, spec, train=False)
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


def calibration_loop(loader: DataLoader) -> Callable[[torch.nn.Module], None]:
    def forward_loop(model: torch.nn.Module) -> None:
        with torch.no_grad():
            for inputs, _ in loader:
                model(inputs)

    return forward_loop


def cosine_lr(step: int, total: int, base: float) -> float:
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total) / max(1, total)))


# ---------------------------------------------------------------- one run
def quantized_model(args: argparse.Namespace, calib: DataLoader) -> tuple[torch.nn.Module, InputSpec, float]:
    """(fresh float model quantized by ModelOpt, its input spec, seconds the quantization took)."""
    model, info = model_from_weights(args.weights)
    if info.input_spec is None:
        raise SystemExit(f"{args.weights} is not an edgeseg checkpoint (no input spec)")
    model = model.float().eval()
    began = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # ModelOpt prints ("Inserted N quantizers") to stdout
        model = mtq.quantize(model, mtq.INT8_DEFAULT_CFG, calibration_loop(calib))
    return model, info.input_spec, time.perf_counter() - began


def train_batches(loader: DataLoader, limit: int) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor]]]:
    for step, batch in enumerate(loader):
        if step >= limit:
            return
        yield step, batch


def fine_tune(model: torch.nn.Module, train_data: SegmentationDataset, args: argparse.Namespace,
              epochs: int) -> dict[str, Any]:
    """edgeseg's QAT recipe on the fake-quant model; returns the run's timings and losses."""
    generator = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(train_data, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=0,
                        generator=generator)
    steps = len(loader) if args.max_steps is None else min(len(loader), args.max_steps)
    total = steps * epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    epoch_losses: list[float] = []
    seen, train_seconds, last_loss = 0, 0.0, float("nan")
    for epoch in range(epochs):
        train_data.set_epoch(epoch)
        generator.manual_seed(args.seed * 1000 + epoch)
        model.train()
        loss_sum, epoch_seen, began = 0.0, 0, time.perf_counter()
        for step, (inputs, targets) in train_batches(loader, steps):
            lr = cosine_lr(epoch * steps + step, total, args.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = F.cross_entropy(model(inputs), targets, ignore_index=IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            last_loss = loss.item()
            loss_sum += last_loss * len(inputs)
            epoch_seen += len(inputs)
            if step % 10 == 0 or step == steps - 1:
                elapsed = time.perf_counter() - began
                log(f"modelopt qat {epochs}ep: epoch {epoch + 1}/{epochs} step {step + 1}/{steps}  "
                    f"loss {last_loss:.4f}  {epoch_seen / max(elapsed, 1e-9):.2f} img/s  "
                    f"{elapsed / (step + 1):.2f} s/step  lr {lr:.2e}")
        train_seconds += time.perf_counter() - began
        seen += epoch_seen
        epoch_losses.append(loss_sum / max(epoch_seen, 1))
    model.eval()
    return {"train_seconds": train_seconds, "images_per_s": seen / max(train_seconds, 1e-9),
            "seconds_per_step": train_seconds / max(1, total), "steps": total, "steps_per_epoch": steps,
            "final_loss": epoch_losses[-1] if epoch_losses else None, "last_step_loss": last_loss,
            "epoch_losses": epoch_losses}


def predict(model: torch.nn.Module, loader: DataLoader, spec: InputSpec) -> tuple[np.ndarray, float]:
    """(argmax labels, uint8 N x H x W at the model input size; seconds) of the model in eval mode."""
    model.eval()
    labels: list[np.ndarray] = []
    began = time.perf_counter()
    with torch.no_grad():
        for inputs, _ in loader:
            logits = model(inputs)
            if tuple(logits.shape[-2:]) != (spec.height, spec.width):
                logits = F.interpolate(logits, size=(spec.height, spec.width), mode="bilinear", align_corners=False)
            labels.append(logits.argmax(1).to(torch.uint8).numpy())
    return np.concatenate(labels), time.perf_counter() - began


def export_onnx(model: torch.nn.Module, spec: InputSpec, path: Path) -> dict[str, Any]:
    """torch.onnx.export of the fake-quant model (ModelOpt emits QuantizeLinear/DequantizeLinear pairs)."""
    began = time.perf_counter()
    model.eval()
    dummy = torch.zeros(1, 3, spec.height, spec.width)
    try:
        with torch.no_grad():
            torch.onnx.export(model, (dummy,), str(path), opset_version=17, dynamo=False,
                              input_names=[spec.input_name], output_names=[spec.output_name])
    except Exception as error:  # noqa: BLE001 - any failure is a finding to report, not a crash
        return {"ok": False, "error": f"{type(error).__name__}: {error}"[:2000],
                "traceback": traceback.format_exc()[-3000:], "seconds": time.perf_counter() - began}
    result: dict[str, Any] = {"ok": True, "path": path.name, "bytes": path.stat().st_size,
                              "seconds": time.perf_counter() - began}
    try:
        import onnx

        graph = onnx.load(str(path)).graph
        ops: dict[str, int] = {}
        for node in graph.node:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
        result["op_counts"] = dict(sorted(ops.items()))
    except Exception as error:  # noqa: BLE001
        result["inspect_error"] = f"{type(error).__name__}: {error}"
    return result


# ---------------------------------------------------------------- main
def write_json(path: Path, report: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "tool": "modelopt.torch.quantization QAT",
        "argv": sys.argv,
        "weights": str(args.weights),
        "recipe": {"optimizer": "AdamW", "lr": args.lr, "weight_decay": 0.0, "schedule": "cosine to 0, no warm-up",
                   "batch_size": args.batch_size, "seed": args.seed, "calib_images": args.calib_images,
                   "loss": f"cross-entropy ignore_index {IGNORE_INDEX}", "mode": "model.train() while training",
                   "runs": "separate run per epoch count: fresh quantize + own schedule",
                   "max_steps": args.max_steps, "max_test": args.max_test},
        "versions": versions(),
        "config": config_summary(),
        "machine": {**machine(), "loadavg_start": os.getloadavg()},
        "runs": [],
    }
    json_path = args.out / "modelopt_qat.json"
    train_set, calib_set, test_set = folder(args.train), folder(args.calib), folder(args.test)
    _, info = model_from_weights(args.weights)
    spec = info.input_spec
    if spec is None:
        raise SystemExit(f"{args.weights} is not an edgeseg checkpoint (no input spec)")
    report["input_size"] = [spec.height, spec.width]
    calib = eval_loader(calib_set, spec, args.batch_size, args.calib_images)
    test = eval_loader(test_set, spec, args.batch_size, args.max_test)
    files = [sample.image.name for sample in test_set.samples[:len(test.dataset)]]
    log(f"modelopt {modelopt.__version__}, torch {torch.__version__}, {spec.height}x{spec.width}, "
        f"train {len(train_set)}, calib {len(calib.dataset)}, test {len(files)} images")
    runs = sorted({0, *args.epoch_list})
    onnx_epochs = max(runs) if args.onnx_epochs is None else args.onnx_epochs
    for epochs in runs:
        torch.manual_seed(args.seed)
        np.random.seed(args.seed % (1 << 32))
        model, _, quantize_seconds = quantized_model(args, calib)
        if epochs == 0:
            report["quantizers"] = quantizer_summary(model)
        log(f"modelopt qat {epochs}ep: quantized in {quantize_seconds:.1f} s")
        run: dict[str, Any] = {"epochs": epochs, "quantize_seconds": quantize_seconds}
        if epochs > 0:
            train_data = SegmentationDataset(train_set, spec, train=True, seed=args.seed)
            run.update(fine_tune(model, train_data, args, epochs))
        else:
            run.update(train_seconds=0.0, images_per_s=None, final_loss=None)
        labels, predict_seconds = predict(model, test, spec)
        npz = args.out / f"modelopt_qat_{epochs}ep.npz"
        np.savez_compressed(npz, labels=labels, files=np.array(files))
        run.update(predict_seconds=predict_seconds, predictions=npz.name)
        if epochs == onnx_epochs:
            run["onnx"] = report["onnx"] = {"epochs": epochs,
                                            **export_onnx(model, spec, args.out / f"modelopt_qat_{epochs}ep.onnx")}
            log(f"modelopt qat {epochs}ep: onnx export {'ok' if run['onnx']['ok'] else run['onnx']['error']}")
        report["runs"].append(run)
        report["machine"]["loadavg_end"] = os.getloadavg()
        write_json(json_path, report)
        log(f"modelopt qat {epochs}ep: done, train {run['train_seconds']:.1f} s, final loss {run['final_loss']}, "
            f"predictions {npz}")
    if onnx_epochs not in runs:
        report["onnx"] = {"ok": False, "error": "not attempted (--onnx-epochs names no run)"}
        write_json(json_path, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
