"""Tiny ONNX files for the tests, built with onnx.helper (no torch), and calibration images to feed them.

``conv_model`` is one convolution (seeded weights, same padding), optionally with a Relu after it, a Q/DQ
pair before it or a float16 initializer; ``save_conv_onnx`` writes it with the metadata ``edgeseg
export`` writes (``add_metadata``: ``edgeseg.onnx_model`` owns that format). The net with every op the
Q/DQ rules talk about is exported from torch: ``helpers.tiny_models.build_tiny_net``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from edgeseg.onnx_model import remove_metadata, write_export_metadata
from edgeseg.spec import InputSpec

if TYPE_CHECKING:  # onnx is imported when a net is built, and the test is skipped where it is absent
    import onnx

SPEC = InputSpec(32, 64)
CLASSES = ["road", "car", "sky", "person"]
MODEL_NAME = "tiny_net"


def class_names(num_classes: int) -> list[str]:
    """The class names the helpers write: ``CLASSES`` first, then c4, c5, ..."""
    return [*CLASSES, *(f"c{i}" for i in range(len(CLASSES), num_classes))][:num_classes]


def conv_model(*, spec: InputSpec = SPEC, num_classes: int = 4, kernel: int = 1, relu: bool = False,
               qdq: bool = False, fp16: bool = False, opset: int = 17, seed: int = 0) -> onnx.ModelProto:
    """images (1x3xHxW) -> [q0 -> dq0 ->] conv0 (kernel x kernel, same padding) [-> relu0] -> logits (1xCxHxW).

    ``fp16`` adds an unused float16 initializer (what the fp16 checks look for); ``opset`` is the default
    domain's version. The weights are seeded normal values, so the argmax varies across the image.
    """
    onnx = pytest.importorskip("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((num_classes, 3, kernel, kernel)).astype(np.float32)
    initializers = [numpy_helper.from_array(weight, "w"),
                    numpy_helper.from_array(rng.standard_normal(num_classes).astype(np.float32) * 0.1, "b")]
    nodes = []
    source = "images"
    if qdq:
        initializers += [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                         numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"], name="q0"),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq0")]
        source = "dq"
    pad = kernel // 2
    nodes.append(helper.make_node("Conv", [source, "w", "b"], ["conv" if relu else "logits"], name="conv0",
                                  pads=[pad] * 4))
    if relu:
        nodes.append(helper.make_node("Relu", ["conv"], ["logits"], name="relu0"))
    if fp16:
        initializers.append(numpy_helper.from_array(np.ones(4, np.float16), "unused_half"))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, list(spec.shape))],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, num_classes, spec.height, spec.width])],
        initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def with_metadata(model: onnx.ModelProto, *, spec: InputSpec, num_classes: int, name: str = MODEL_NAME,
                  classes: Sequence[str] | None = None) -> onnx.ModelProto:
    """``model`` with exactly the metadata ``edgeseg export`` writes (earlier entries dropped); class names
    default to ``class_names(num_classes)``."""
    remove_metadata(model, prefix="")
    write_export_metadata(model, model=name, num_classes=num_classes,
                          classes=list(classes) if classes is not None else class_names(num_classes),
                          input_spec=spec)
    return model


def add_metadata(path: Path, *, spec: InputSpec, num_classes: int, name: str = MODEL_NAME,
                 classes: Sequence[str] | None = None) -> Path:
    """Rewrite the ONNX file at ``path`` with the metadata ``edgeseg export`` writes."""
    onnx = pytest.importorskip("onnx")

    model = with_metadata(onnx.load(str(path)), spec=spec, num_classes=num_classes, name=name, classes=classes)
    onnx.save(model, str(path))
    return path


def save_conv_onnx(path: Path, *, spec: InputSpec = SPEC, num_classes: int = 4, kernel: int = 1,
                   relu: bool = False, qdq: bool = False, seed: int = 0, metadata: bool = True,
                   name: str = MODEL_NAME, classes: Sequence[str] | None = None) -> Path:
    """Write ``conv_model(...)`` to ``path`` (folders made), with export metadata unless ``metadata=False``."""
    onnx = pytest.importorskip("onnx")

    model = conv_model(spec=spec, num_classes=num_classes, kernel=kernel, relu=relu, qdq=qdq, seed=seed)
    if metadata:
        with_metadata(model, spec=spec, num_classes=num_classes, name=name, classes=classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_images(folder: Path, count: int, *, seed: int = 0, size: tuple[int, int] = (48, 80)) -> list[Path]:
    """Random-ish RGB images with structure (gradients + noise), as PNG (even) and JPEG in sub/ (odd)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(count):
        base = np.stack([(xx * (i + 1)) % 256, (yy * 3 + i * 17) % 256, ((xx + yy) * 2) % 256], axis=-1)
        noise = rng.integers(0, 40, size=(h, w, 3))
        image = np.clip(base + noise, 0, 255).astype(np.uint8)
        path = folder / (f"img_{i:03d}.png" if i % 2 == 0 else f"sub/img_{i:03d}.jpg")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def two_conv_model(path: Path, *, num_classes: int = 4, seed: int = 0) -> Path:
    """images (1x3x32x32) -> conv0 (3x3, 8 channels) -> relu0 -> conv1 (1x1) -> logits: two quantized layers,
    with export metadata (no torch)."""
    onnx = pytest.importorskip("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper

    rng = np.random.default_rng(seed)
    initializers = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w0"),
                    numpy_helper.from_array(rng.standard_normal((num_classes, 8, 1, 1)).astype(np.float32), "w1")]
    nodes = [helper.make_node("Conv", ["images", "w0"], ["conv0_out"], name="conv0", pads=[1] * 4),
             helper.make_node("Relu", ["conv0_out"], ["relu0_out"], name="relu0"),
             helper.make_node("Conv", ["relu0_out", "w1"], ["logits"], name="conv1")]
    spec = InputSpec(32, 32)
    graph = helper.make_graph(
        nodes, "two_conv",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, list(spec.shape))],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, num_classes, 32, 32])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with_metadata(model, spec=spec, num_classes=num_classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
