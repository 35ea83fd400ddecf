"""`edgeseg eval` (issue #24): public datasets are scored at the label's full resolution by default (logits
upsampled bilinearly, the official protocol), --eval-at input scores at the model input; the summary says which
and names a next command; a split without one labelled pixel is an error, not a score. `train
--save-safetensors` lists best.safetensors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.dataset_layouts import HEIGHT, WIDTH, write_cityscapes

from edgeseg.cli import main

torch = pytest.importorskip("torch")


@pytest.fixture()
def checkpoint(tiny_model: str, tmp_path: Path) -> Path:
    from edgeseg.data.labels import CITYSCAPES_CLASSES
    from edgeseg.models import create_model
    from edgeseg.models.checkpoint import save_checkpoint
    from edgeseg.spec import InputSpec

    torch.manual_seed(0)
    model = create_model(tiny_model, num_classes=len(CITYSCAPES_CLASSES))
    return save_checkpoint(tmp_path / "run" / "best.pt", model, model_name=tiny_model, classes=CITYSCAPES_CLASSES,
                           input_spec=InputSpec(32, 64))


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_public_data_is_scored_at_label_resolution_by_default(checkpoint: Path, tmp_path: Path) -> None:
    root = write_cityscapes(tmp_path / "cs", {"val": 2})
    default = invoke("eval", "--weights", checkpoint, "--data", f"cityscapes:{root}")
    assert default.exit_code == 0, default.output
    assert f"of {2 * HEIGHT * WIDTH} (label 255" in default.output  # 64x128 labels, the model runs at 32x64
    assert "label's full resolution" in default.output and "official protocol" in default.output
    assert "next:" in default.output and f"edgeseg build --weights {checkpoint}" in default.output

    at_input = invoke("eval", "--weights", checkpoint, "--data", f"cityscapes:{root}", "--eval-at", "input")
    assert at_input.exit_code == 0, at_input.output
    assert f"of {2 * 32 * 64} (label 255" in at_input.output and "not comparable with published" in at_input.output


def test_a_split_without_labelled_pixels_is_an_error(checkpoint: Path, tmp_path: Path) -> None:
    from PIL import Image

    root = write_cityscapes(tmp_path / "cs", {"test": 2})
    for mask in (root / "gtFine" / "test").rglob("*_labelIds.png"):  # the public test labels: all unlabeled
        Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint8)).save(mask)
    result = invoke("eval", "--weights", checkpoint, "--data", f"cityscapes:{root}:test")
    assert result.exit_code == 1, result.output
    assert "no labelled pixel" in result.output and ":val" in result.output
    assert "mIoU" not in result.output and "Traceback" not in result.output


def test_evaluate_upsamples_logits_to_each_label() -> None:
    from torch.utils.data import DataLoader

    from edgeseg.training.evaluation import evaluate

    class Fixed(torch.nn.Module):
        """2-class logits at 2x2: class 1 wins in the right column only."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            right = torch.tensor([[-1.0, 1.0], [-1.0, 1.0]])
            return torch.stack([-right, right]).unsqueeze(0).expand(len(x), -1, -1, -1)

    label = torch.zeros(4, 6, dtype=torch.int64)
    label[:, 3:] = 1  # the right half: what the upsampled logits say, pixel for pixel
    batches = [(torch.zeros(1, 3, 2, 2), [label])]
    result = evaluate(Fixed(), DataLoader(batches, batch_size=None), 2, ["a", "b"], torch.device("cpu"))
    assert result.eval_at == "label" and result.pixels == 24 and result.miou == pytest.approx(1.0)
    coarse = [(torch.zeros(1, 3, 2, 2), torch.tensor([[[0, 1], [0, 1]]]))]
    assert evaluate(Fixed(), DataLoader(coarse, batch_size=None), 2, ["a", "b"], torch.device("cpu")).eval_at == "input"


def test_train_summary_lists_best_safetensors(tiny_model: str, tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    root = write_cityscapes(tmp_path / "cs", {"train": 2, "val": 1})
    out = tmp_path / "run"
    result = invoke("train", "--model", tiny_model, "--data", f"cityscapes:{root}", "--input-size", "32x64",
                    "--epochs", 1, "--batch-size", 2, "--workers", 0, "--threads", 1, "--out", out,
                    "--save-safetensors")
    assert result.exit_code == 0, result.output
    assert re.search(r"best \(safetensors\) +" + re.escape(str(out / "best.safetensors")), result.output)
    assert (out / "best.safetensors").is_file()
