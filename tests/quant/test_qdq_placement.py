"""The Q/DQ placement for TensorRT of one model per decoder family matches its golden file.

A change to where Q/DQ goes shows up here as a diff of tensor names: if it is intended,
regenerate with `python tests/golden/make_qdq_placement.py` and review the diff.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
_spec = importlib.util.spec_from_file_location("make_qdq_placement", GOLDEN / "make_qdq_placement.py")
assert _spec is not None and _spec.loader is not None
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)


def test_every_decoder_family_has_a_golden_file() -> None:
    assert set(make.family_models()) == {p.stem for p in (GOLDEN / "qdq_placement").glob("*.json")}
    assert set(make.family_models()) >= {"deeplabv3plus", "dspp", "mdspp", "hrnetv2", "ocr"}


@pytest.mark.parametrize("decoder", sorted(make.family_models()))
def test_qdq_placement_matches_golden(decoder: str, tmp_path: Path) -> None:
    golden = json.loads((GOLDEN / "qdq_placement" / f"{decoder}.json").read_text())
    found = make.placement(golden["model"], tmp_path)
    assert found["num_weights"] == golden["num_weights"]
    missing = sorted(set(golden["activations"]) - set(found["activations"]))
    extra = sorted(set(found["activations"]) - set(golden["activations"]))
    assert not missing and not extra, f"no longer quantized: {missing[:5]}; newly quantized: {extra[:5]}"
    assert found["activations"] == golden["activations"]  # and read by the same ops
    assert found["edges"] == golden["edges"]  # per-edge Q/DQ into Concats
    # a DQ feeds a Resize only for TensorRT >= 10, and only on a convolution's output (ModelOpt's rule)
    assert golden["trt_version"].startswith("10") or not any("Resize" in ops for ops in found["activations"].values())
