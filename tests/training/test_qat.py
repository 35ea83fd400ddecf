"""Pieces of edgeseg qat that the end-to-end CLI test (tests/commands/test_cli_qat.py) does not pin down."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from edgeseg.training.onnx_graph import fake_quantize_activation, fake_quantize_weight  # noqa: E402
from edgeseg.training.qat import QatConfig, _placement  # noqa: E402


def test_half_scales_quantize_with_the_float16_scale_and_pass_gradients() -> None:
    scale = torch.tensor(0.0123456, requires_grad=True)  # not a float16 value
    x = torch.linspace(-2, 2, 1001, requires_grad=True)
    half = fake_quantize_activation(x, scale, half_scales=True)
    expected = torch.clamp(torch.round(x / scale.half().float()), -128, 127) * scale.half().float()
    assert torch.equal(half.detach(), expected.detach())
    assert not torch.equal(half.detach(), fake_quantize_activation(x, scale).detach())
    half.sum().backward()
    assert x.grad is not None and scale.grad is not None and torch.isfinite(scale.grad)


def test_half_scale_weights_keep_their_int8_values() -> None:
    """FP16 regions round a weight's scale but keep its int8 values (fp16_regions.py): the graph does the same."""
    w = torch.randn(4, 3, 3, 3)
    scale = w.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    q = torch.clamp(torch.round(w / scale), -127, 127)
    assert torch.equal(fake_quantize_weight(w, 0, half_scales=True), q * scale.half().float())
    assert torch.equal(fake_quantize_weight(w, 0), q * scale)


def test_placement_comes_from_the_folders_int8_file_unless_given(tmp_path: Path) -> None:
    import onnx

    from edgeseg.quant.qdq_trt import QDQ_METADATA_KEY
    from edgeseg.training.qat_checkpoint import QatPlacement

    config = QatConfig(weights=tmp_path / "w.pt", ranges=tmp_path, data=tmp_path, out=tmp_path)
    placement, source = _placement(config, tmp_path / "model.int8.onnx")
    assert source == "defaults" and placement.keep_fp_layers == [] and placement.high_precision == "fp16"
    info = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in ("x", "y")]
    model = onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                                          info[:1], info[1:]))
    model.metadata_props.add(key=QDQ_METADATA_KEY, value='{"trt_version": "8.6.1", "concat_scales": "shared", '
                                                         '"keep_fp_layers": ["/head/Conv"]}')
    onnx.save(model, str(tmp_path / "model.int8.onnx"))
    config.high_precision = "fp32"
    placement, source = _placement(config, tmp_path / "model.int8.onnx")
    assert placement == QatPlacement("8.6.1", "shared", ["/head/Conv"], "fp32") and "model.int8.onnx" in source
    config.trt_version = "10.3"
    assert _placement(config, tmp_path / "model.int8.onnx")[0].trt_version == "10.3"
    config.placement = QatPlacement("10.0")
    assert _placement(config, tmp_path / "model.int8.onnx") == (QatPlacement("10.0"), "as given")
