"""`edgeseg data synth` (issue #24 items 14, 17): no mixing of two seeds in one folder, and "next:" commands
that work at the size asked for."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from click.testing import CliRunner

from edgeseg.cli import main


def _synth(out: Path, *extra: str) -> object:
    return CliRunner().invoke(main, ["data", "synth", "--out", str(out), "--num", "2", "--size", "32x32", *extra])


def test_another_seed_into_an_existing_set_is_refused_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "train"
    assert _synth(out, "--seed", "0").exit_code == 0
    before = sorted((out / "images").iterdir())
    refused = _synth(out, "--seed", "1")
    assert refused.exit_code == 1 and "would mix two sets" in refused.output, refused.output
    assert "seed 0" in refused.output and "--force" in refused.output and "Traceback" not in refused.output
    assert sorted((out / "images").iterdir()) == before
    assert json.loads((out / "synth.json").read_text())["seed"] == 0
    extended = _synth(out, "--seed", "0", "--start", "2")  # the same settings extend the set
    assert extended.exit_code == 0 and len(list((out / "images").iterdir())) == 4
    forced = _synth(out, "--seed", "1", "--force")
    assert forced.exit_code == 0, forced.output
    assert len(list((out / "images").iterdir())) == 2 and json.loads((out / "synth.json").read_text())["seed"] == 1


def test_small_scenes_suggest_a_model_that_trains_at_that_size(tmp_path: Path) -> None:
    import torch

    from edgeseg.models import create_model

    result = CliRunner().invoke(main, ["data", "synth", "--out", str(tmp_path / "train"), "--num", "3",
                                       "--size", "64x128"])
    assert result.exit_code == 0, result.output
    lines = [shlex.split(line) for line in result.output.split("\nnext:\n", 1)[1].splitlines()]
    synth_val, train = lines
    assert int(synth_val[synth_val.index("--num") + 1]) >= 20  # not a 2-image validation set
    model = train[train.index("--model") + 1]
    assert "dspp" not in model  # the SPEED decoders need at least 128x128
    with torch.no_grad():
        create_model(model, num_classes=6).eval()(torch.zeros(1, 3, 64, 128))
    big = CliRunner().invoke(main, ["data", "synth", "--out", str(tmp_path / "big"), "--num", "1", "--size",
                                    "128x128"])
    assert "--model shufflenetv2_x0_5_mdspp" in big.output
