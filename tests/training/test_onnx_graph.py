"""OnnxGraphModule: the float and the Q/DQ ONNX graph of each decoder family, run in PyTorch, match onnxruntime;
batches, gradients and the quantizers' placement; what it refuses.

One model per decoder family (tests/golden/make_qdq_placement.py: 128x128, 4 classes, torch.manual_seed(0)), its
ranges calibrated (minmax) on two random inputs so that the Q/DQ forward is meaningful, exported once per module.
The Q/DQ comparison allows the flips a float summation order causes at a rounding boundary (one activation
element off by one step, then carried on): on a random network's low-margin pixels the argmax can follow it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from helpers.tiny_models import build_tiny_net  # noqa: E402
from helpers.tiny_onnx import conv_model  # noqa: E402

from edgeseg.errors import ArtifactError  # noqa: E402
from edgeseg.quant.qdq_trt import MOVEMENT_OPS  # noqa: E402
from edgeseg.training.onnx_graph import OnnxGraphModule  # noqa: E402

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
_spec = importlib.util.spec_from_file_location("make_qdq_placement", GOLDEN / "make_qdq_placement.py")
assert _spec is not None and _spec.loader is not None
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)
FAMILIES = sorted(make.family_models())
DECIDED = 0.02  # a pixel whose top-2 logits differ by more than this share of the logit scale is decided


@dataclass
class Case:
    float_model: Any
    qdq: Any
    x: np.ndarray  # 1 x 3 x H x W


def _calibrated(path: Path, rng: np.random.Generator, **options: Any) -> Any:
    from edgeseg.quant.qdq_trt import quantize_for_tensorrt
    from edgeseg.quant.ranges import Ranges, compute_ranges

    model = onnx.load(str(path))
    name, shape = model.graph.input[0].name, [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    batches = [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(2)]
    ranges = Ranges("minmax", compute_ranges(path, batches, method="minmax"))
    return model, quantize_for_tensorrt(model, ranges, **{"trt_version": make.TRT_VERSION, **options})


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """One torch thread (ONNX Runtime's sessions here take one too): the machine may be shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """decoder -> Case, exported on first use ("qdqnet": the tiny Q/DQ test net at 64x96)."""
    from edgeseg.export import ExportConfig, export_onnx
    from edgeseg.models import create_model
    from edgeseg.spec import InputSpec

    made: dict[str, Case] = {}

    def get(decoder: str) -> Case:
        if decoder not in made:
            folder = tmp_path_factory.mktemp(decoder)
            if decoder == "qdqnet":
                path = build_tiny_net(folder / "model.onnx")
            else:
                model_name = make.family_models()[decoder]
                torch.manual_seed(0)
                model = create_model(model_name, num_classes=make.NUM_CLASSES).eval()
                config = ExportConfig(model=model_name, num_classes=make.NUM_CLASSES,
                                      input_spec=InputSpec(*make.SIZE), num_reference_samples=1)
                path = export_onnx(model, config, folder).onnx_path
            rng = np.random.default_rng(0)
            float_model, qdq = _calibrated(path, rng)
            shape = [d.dim_value for d in float_model.graph.input[0].type.tensor_type.shape.dim]
            made[decoder] = Case(float_model, qdq, rng.standard_normal(shape).astype(np.float32))
        return made[decoder]
    return get


def run_ort(model: Any, x: np.ndarray, level: Any = None) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = level if level is not None else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]  # type: ignore[no-any-return]


def run_torch(module: OnnxGraphModule, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()  # type: ignore[no-any-return]


def agreement(found: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(argmax agreement, agreement on the decided pixels of ``reference``)."""
    same = found.argmax(1) == reference.argmax(1)
    top = np.sort(reference, axis=1)
    decided = (top[:, -1] - top[:, -2]) > DECIDED * np.abs(reference).max()
    return float(same.mean()), float(same[decided].mean())


@pytest.mark.parametrize("decoder", [*FAMILIES, "qdqnet"])
def test_float_graph_matches_onnxruntime(decoder: str, cases: Any) -> None:
    case = cases(decoder)
    found, reference = run_torch(OnnxGraphModule(case.float_model), case.x), run_ort(case.float_model, case.x)
    assert np.abs(found - reference).max() <= 1e-4 * np.abs(reference).max()


@pytest.mark.parametrize("decoder", [*FAMILIES, "qdqnet"])
def test_qdq_graph_matches_onnxruntime(decoder: str, cases: Any) -> None:
    case = cases(decoder)
    module = OnnxGraphModule(case.qdq, float_model=case.float_model)
    found = run_torch(module, case.x)
    plain = run_ort(case.qdq, case.x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)  # Q/DQ as written
    scale = np.abs(plain).max()
    overall, decided = agreement(found, plain)  # 1.0 here; a flip carried on costs up to ~2 % on other models
    assert decided >= 0.99 and overall >= 0.97, (overall, decided)
    assert np.abs(found - plain).mean() <= 2e-2 * scale
    # the default level fuses Q/DQ into int8 kernels (QLinear*) that round differently: close, not equal
    fused = run_ort(case.qdq, case.x)
    overall, decided = agreement(found, fused)
    assert decided >= 0.99 and overall >= 0.97, (overall, decided)
    assert np.abs(found - fused).mean() <= 2e-2 * scale
    # without the float model the weights start from the int8 values: the same forward
    assert np.abs(run_torch(OnnxGraphModule(case.qdq), case.x) - found).mean() <= 1e-3 * scale


@pytest.mark.parametrize("decoder", [*FAMILIES, "qdqnet"])
def test_every_op_matches_onnxruntime_given_its_inputs(decoder: str, cases: Any) -> None:
    """Op by op, fed onnxruntime's own intermediates (the Q/DQ file as written): float ops agree to float rounding,
    a fake quantizer at most on a rare element at a rounding boundary (one step)."""
    case = cases(decoder)
    quantize_outputs = {n.output[0] for n in case.qdq.graph.node if n.op_type in ("QuantizeLinear", "Constant")}
    observed = onnx.ModelProto()
    observed.CopyFrom(case.qdq)
    names = [o for n in observed.graph.node for o in n.output if o not in quantize_outputs]
    del observed.graph.output[:]
    observed.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(observed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    values = dict(zip(names, session.run(None, {session.get_inputs()[0].name: case.x}), strict=True))
    module = OnnxGraphModule(case.qdq, float_model=case.float_model)
    fed = {name: torch.from_numpy(np.asarray(value)) for name, value in values.items()}
    fed[case.qdq.graph.input[0].name] = torch.from_numpy(case.x)
    checked = 0
    with torch.no_grad():
        for name, found in module.step_outputs(fed):
            reference = values[name]
            assert tuple(found.shape) == reference.shape, name
            off = np.abs(found.numpy() - reference) > 1e-4 * max(float(np.abs(reference).max()), 1e-6)
            assert off.mean() <= 1e-3, (name, int(off.sum()))
            checked += 1
    assert checked == len(names)


@pytest.mark.parametrize("decoder", [*FAMILIES, "qdqnet"])
def test_a_batch_of_three_is_three_single_runs(decoder: str, cases: Any) -> None:
    case = cases(decoder)
    module = OnnxGraphModule(case.qdq, float_model=case.float_model)
    frames = np.concatenate([case.x, case.x[..., ::-1], -case.x]).copy()
    batch = run_torch(module, frames)
    singles = np.concatenate([run_torch(module, frame[None]) for frame in frames])
    assert batch.shape == singles.shape
    assert np.abs(batch - singles).mean() <= 1e-3 * np.abs(singles).max()
    assert agreement(batch, singles)[1] >= 0.999


@pytest.mark.parametrize("decoder", ["deeplabv3plus", "ocr", "qdqnet"])
def test_gradients_reach_every_weight_and_scale(decoder: str, cases: Any) -> None:
    case = cases(decoder)
    module = OnnxGraphModule(case.qdq, float_model=case.float_model, learn_scales=True)
    with torch.no_grad():  # residual blocks whose last BatchNorm starts at gamma 0 would stop the gradient there
        for parameter in module.parameters():
            if parameter.dim() > 1 and not parameter.any():
                parameter.normal_(0.0, 0.01)
    module(torch.from_numpy(case.x)).sum().backward()
    for name in module.float_initializers():
        grad = module.parameter(name).grad
        assert grad is not None and bool(torch.isfinite(grad).all()), name
    grad = module.act_scale.grad
    assert grad is not None and bool(torch.isfinite(grad).all())
    zero = {q.tensor for q in module.activation_quantizers if float(grad[module._scale_index[q.scale_name]]) == 0}
    assert zero <= exactly_requantized(case.qdq), sorted(zero)[:3]


def exactly_requantized(qdq: Any) -> set[str]:
    """Quantized tensors whose scale's LSQ gradient is exactly 0: a channel split of a tensor already quantized at
    that scale (quantizing again changes nothing)."""
    producer = {o: n.op_type for n in qdq.graph.node for o in n.output}
    return {n.input[0] for n in qdq.graph.node
            if n.op_type == "QuantizeLinear" and producer.get(n.input[0]) in MOVEMENT_OPS}


@pytest.mark.parametrize("decoder", [*FAMILIES, "qdqnet"])
def test_quantizers_are_the_files_qdq_placement(decoder: str, cases: Any) -> None:
    case = cases(decoder)
    module = OnnxGraphModule(case.qdq, float_model=case.float_model)
    nodes, inits = case.qdq.graph.node, {i.name: i for i in case.qdq.graph.initializer}
    quantized = [n.input[0] for n in nodes if n.op_type == "QuantizeLinear"]
    assert [q.tensor for q in module.activation_quantizers] == quantized
    assert set(module.activation_scales()) == {n.input[1] for n in nodes if n.op_type == "QuantizeLinear"}
    weights = [n for n in nodes if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    axes = [next((a.i for a in n.attribute if a.name == "axis"), None) for n in weights]
    assert [(q.weight, q.axis) for q in module.weight_quantizers] == [
        (n.input[0].removesuffix("_quantized"), a) for n, a in zip(weights, axes, strict=True)]
    float_inits = {i.name: onnx.numpy_helper.to_array(i) for i in case.float_model.graph.initializer}
    trained = module.float_initializers()
    assert {q.weight for q in module.weight_quantizers} <= set(trained)
    for name, value in trained.items():
        np.testing.assert_array_equal(value, float_inits[name])


@pytest.mark.parametrize("options", [{"trt_version": "8.6"}, {"weight_bits": 7}], ids=["trt8", "7bit"])
def test_qdq_variants_match_onnxruntime(options: dict[str, Any], tmp_path: Path) -> None:
    """TensorRT 8.x's per-tensor ConvTranspose weights; OpenVINO's 7-bit weights (bits from the file's record)."""
    float_model, qdq = _calibrated(build_tiny_net(tmp_path / "model.onnx"), np.random.default_rng(0), **options)
    module = OnnxGraphModule(qdq, float_model=float_model)
    assert {q.bits for q in module.weight_quantizers} == {options.get("weight_bits", 8)}
    assert (None in {q.axis for q in module.weight_quantizers}) == ("trt_version" in options)
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 96)).astype(np.float32)
    found, reference = run_torch(module, x), run_ort(qdq, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    assert np.abs(found - reference).max() <= 1e-4 * np.abs(reference).max()


def _tiny_qdq(tmp_path: Path) -> tuple[Any, Any]:
    path = build_tiny_net(tmp_path / "model.onnx")
    return _calibrated(path, np.random.default_rng(0))


def test_unknown_op_is_refused() -> None:
    model = conv_model()
    model.graph.node[0].op_type = "Erf"
    with pytest.raises(ArtifactError, match="Erf"):
        OnnxGraphModule(model)


def test_fp16_file_is_refused(tmp_path: Path) -> None:
    from edgeseg.quant.fp16_regions import convert_float_regions
    from edgeseg.quant.ranges import Ranges, TensorRange

    _, qdq = _tiny_qdq(tmp_path)
    names = [i.name for i in qdq.graph.input] + [o for n in qdq.graph.node for o in n.output]
    fp16, _ = convert_float_regions(qdq, Ranges("minmax", {n: TensorRange(-1.0, 1.0, 1.0) for n in names}))
    with pytest.raises(ArtifactError, match="FP32-region"):
        OnnxGraphModule(fp16)


@pytest.mark.parametrize("change", ["asymmetric", "uint8", "extra reader"])
def test_other_quantization_is_refused(change: str, tmp_path: Path) -> None:
    _, qdq = _tiny_qdq(tmp_path)
    quantize = next(n for n in qdq.graph.node if n.op_type == "QuantizeLinear")
    zero = next(i for i in qdq.graph.initializer if i.name == quantize.input[2])
    if change == "asymmetric":
        zero.CopyFrom(onnx.numpy_helper.from_array(np.array(3, np.int8), zero.name))
    elif change == "uint8":
        zero.CopyFrom(onnx.numpy_helper.from_array(np.array(0, np.uint8), zero.name))
    else:
        qdq.graph.node.append(onnx.helper.make_node("Identity", [quantize.output[0]], ["copy"]))
    with pytest.raises(ArtifactError, match="FP32-region"):
        OnnxGraphModule(qdq)
