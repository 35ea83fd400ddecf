from __future__ import annotations

from pathlib import Path

from edgeseg.pipeline.step_cache import StepRunner


def test_steps_skip_when_unchanged_and_rerun_otherwise(tmp_path: Path) -> None:
    calls: list[str] = []
    out = tmp_path / "a.txt"

    def step() -> dict:
        calls.append("run")
        out.write_text("result")
        return {"n": 1}

    runner = StepRunner(tmp_path, log=lambda _: None)
    assert not runner.run("s", {"x": 1}, [out], step).skipped
    again = StepRunner(tmp_path, log=lambda _: None).run("s", {"x": 1}, [out], step)
    assert again.skipped and again.result == {"n": 1} and calls == ["run"]
    StepRunner(tmp_path, log=lambda _: None).run("s", {"x": 2}, [out], step)  # key changed
    out.write_text("edited")  # output changed behind our back
    StepRunner(tmp_path, log=lambda _: None).run("s", {"x": 2}, [out], step)
    StepRunner(tmp_path, force=True, log=lambda _: None).run("s", {"x": 2}, [out], step)
    assert calls == ["run"] * 4


def test_corrupt_state_means_rerun(tmp_path: Path) -> None:
    (tmp_path / "steps.json").write_text("{garbage")
    out = tmp_path / "o"
    result = StepRunner(tmp_path, log=lambda _: None).run("s", {}, [out], lambda: out.write_text("1") and None)
    assert not result.skipped
