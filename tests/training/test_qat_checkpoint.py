"""qat.pt round-trips, is told apart from other weights files, and is refused where a float checkpoint is needed."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from edgeseg.errors import ModelError  # noqa: E402
from edgeseg.quant.ranges import Ranges, TensorRange  # noqa: E402
from edgeseg.spec import InputSpec  # noqa: E402
from edgeseg.training.qat_checkpoint import (  # noqa: E402
    QatCheckpoint,
    QatMetrics,
    QatPlacement,
    is_qat_checkpoint,
    load_qat_checkpoint,
    read_qat_checkpoint,
    save_qat_checkpoint,
)


def _checkpoint() -> QatCheckpoint:
    ranges = Ranges("percentile", {"x": TensorRange(-1.0, 2.0, 2.0)}, onnx_sha256="ab" * 32)
    return QatCheckpoint("shufflenetv2_x0_5_mdspp", ["floor", "wall"], InputSpec(64, 128), b"\x08\x09float",
                         ranges, {"x_scale": 0.015}, QatPlacement("10.3.0", "separate", ["first"]),
                         {"path": "best.pt", "sha256": "cd" * 32}, b"original",
                         QatMetrics(4, 0.5, 0.4, 0.45, 0.98, 0.99), [[1, 2, 3], [4, 5, 6]],
                         [{"epoch": 0, "val_miou": 0.4}], {"lr": 1e-5})


def test_round_trip_through_the_file(tmp_path: Path) -> None:
    checkpoint = _checkpoint()
    path = save_qat_checkpoint(tmp_path / "qat.pt", checkpoint)
    loaded = load_qat_checkpoint(path)
    assert loaded == checkpoint
    assert is_qat_checkpoint(path) and read_qat_checkpoint(path) == checkpoint


def test_other_weights_files_are_not_qat_checkpoints(tmp_path: Path) -> None:
    import torch

    plain = tmp_path / "plain.pt"
    torch.save({"conv.weight": torch.zeros(1)}, plain)
    assert not is_qat_checkpoint(plain) and read_qat_checkpoint(plain) is None
    assert not is_qat_checkpoint(tmp_path / "missing.pt")


def test_a_malformed_qat_checkpoint_names_the_fix(tmp_path: Path) -> None:
    import torch

    data = _checkpoint().to_dict()
    del data["scales"]
    torch.save(data, tmp_path / "broken.pt")
    with pytest.raises(ModelError, match="malformed QAT checkpoint") as raised:
        load_qat_checkpoint(tmp_path / "broken.pt")
    assert "edgeseg qat" in str(raised.value.fix)


def test_a_qat_checkpoint_is_refused_where_pytorch_weights_are_needed(tmp_path: Path) -> None:
    from edgeseg.models import model_from_weights

    path = save_qat_checkpoint(tmp_path / "qat.pt", _checkpoint())
    with pytest.raises(ModelError, match="is a QAT checkpoint") as raised:
        model_from_weights(path)
    assert "edgeseg build --int8 --weights" in str(raised.value.fix) and "best.pt" in str(raised.value.fix)
