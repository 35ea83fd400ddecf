"""The backend registry (issue #25 item 2): one list of backends that Segmenter, run, build, bench, validate and
--precision best ask. A FAKE backend registered here shows up everywhere: the CLI's --backend choices, "auto"
ranking, Segmenter, validate --candidate, bench and the --precision best candidates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.tiny_onnx import MODEL_NAME, save_conv_onnx
from helpers.validated_build import SPEC, validated_build

from edgeseg.cli import main
from edgeseg.errors import ConfigError
from edgeseg.manifest import Manifest
from edgeseg.runtime import backend as registry
from edgeseg.runtime.backend import BackendInfo, Candidate

pytest.importorskip("onnxruntime")

OPENED: list[dict[str, Any]] = []


class FakeBackend:
    """ONNX Runtime underneath, under another name, with a fixed offset on its logits (``bias``) so a test can
    make one candidate wrong; records how it was opened."""

    def __init__(self, path: Path, label: str = "fake", bias: float = 0.0, **options: Any) -> None:
        from edgeseg.runtime.ort_backend import OnnxRuntimeBackend

        self._ort = OnnxRuntimeBackend(path)
        self.name, self.bias = label, bias
        self.input_name, self.output_name = self._ort.input_name, self._ort.output_name
        self.input_shape, self.output_shape = self._ort.input_shape, self._ort.output_shape
        OPENED.append({"name": label, "path": Path(path).name, **options})

    def infer(self, x: np.ndarray) -> np.ndarray:
        logits = self._ort.infer(x).copy()
        if self.bias:
            logits[:, 0] += self.bias  # class 0 everywhere: wrong
        return logits

    def close(self) -> None:
        self._ort.close()


def open_fake(path: Any, *, threads: int | None = None, manifest: Any = None, folder: Any = None,
              **options: Any) -> FakeBackend:
    return FakeBackend(Path(path), **options)


@pytest.fixture
def fake_backend():
    """A registered backend "fake" ranked before ONNX Runtime for "auto", removed afterwards."""
    OPENED.clear()
    info = registry.register_backend(BackendInfo(
        "fake", open_fake, roles=("onnx",), suffixes=(".onnx",), auto_rank=5, builds=True,
        candidates=lambda: [Candidate("fake", "onnx", "fp32", {"label": "fake"})]))
    yield info
    registry.unregister_backend("fake")


def _help(*command: str) -> str:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", [["run"], ["build"], ["bench"], ["validate"]])
def test_a_registered_backend_is_a_cli_choice(fake_backend: BackendInfo, command: list[str]) -> None:
    assert "fake" in _help(*command).split("--backend", 1)[1].split("\n")[0]
    registry.unregister_backend("fake")
    assert "fake" not in _help(*command).split("--backend", 1)[1].split("\n")[0]


def test_an_unknown_backend_is_a_bad_option(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", "--artifacts", str(tmp_path), "--source", "x", "--backend", "nosuch"])
    assert result.exit_code == 2 and "nosuch" in result.output and "Traceback" not in result.output


def test_auto_ranks_the_registry(fake_backend: BackendInfo, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"x")
    built_on_trt = Manifest(model="tiny", num_classes=4, input_spec=SPEC, backend="tensorrt",
                            artifacts={"onnx": "model.onnx", "engine": "model.engine"})
    # no engine file and no TensorRT: the best-ranked backend that runs a file of the folder (fake: 5 < onnxruntime)
    assert registry.choose_for_folder("auto", built_on_trt.artifacts, tmp_path, built_with="tensorrt",
                                      validated_role="engine") == "fake"
    # the build's own backend wins when it is here and runs the validated file
    assert registry.choose_for_folder("auto", {"onnx": "model.onnx"}, tmp_path, built_with="onnxruntime",
                                      validated_role="onnx") == "onnxruntime"
    # a backend that cannot run any file of the folder is passed over
    assert registry.choose_for_folder("auto", {"onnx_int8_cpu": "model.onnx"}, tmp_path,
                                      validated_role="onnx_int8_cpu") == "onnxruntime"
    assert registry.choose_for_build("auto") in ("tensorrt", "fake")
    assert registry.backend_for_file(tmp_path / "model.onnx") == "fake"
    with pytest.raises(ConfigError, match="unknown backend"):
        registry.choose_for_folder("nosuch", {}, tmp_path)


def test_segmenter_runs_a_registered_backend(fake_backend: BackendInfo, tmp_path: Path) -> None:
    from edgeseg.runtime.segmenter import Segmenter

    folder = validated_build(tmp_path / "b")
    seg = Segmenter.from_artifacts(folder, backend="fake")
    try:
        assert seg.name == "fake"
        mask = seg(np.zeros((SPEC.height, SPEC.width, 3), np.uint8))
        assert mask.shape == (SPEC.height, SPEC.width)
    finally:
        seg.close()
    seg = Segmenter.from_artifacts(folder)  # auto: the build's backend (onnxruntime) is here
    assert seg.name == "onnxruntime"
    seg.close()


def test_run_and_validate_take_a_registered_backend(fake_backend: BackendInfo, tmp_path: Path) -> None:
    from helpers.tiny_onnx import write_images

    folder = validated_build(tmp_path / "b")
    write_images(tmp_path / "frames", 2, size=(SPEC.height, SPEC.width))
    result = CliRunner().invoke(main, ["run", "--artifacts", str(folder), "--source", str(tmp_path / "frames"),
                                       "--backend", "fake"])
    assert result.exit_code == 0, result.output
    assert "fake" in result.output and OPENED[-1]["name"] == "fake"
    # validate --candidate on the fake runtime, against a PyTorch-free reference: the same file under ONNX Runtime
    reference = _reference_of(folder)
    result = CliRunner().invoke(main, ["validate", "--candidate", str(folder / "model.onnx"), "--reference",
                                       str(reference), "--backend", "fake", "--out", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    assert OPENED[-1]["path"] == "model.onnx"


def _reference_of(folder: Path) -> Path:
    """reference.npz of the folder's model.onnx (ONNX Runtime's logits stand for PyTorch's)."""
    from edgeseg.reference import REFERENCE_FILE, Reference, save_reference
    from edgeseg.runtime.ort_backend import OnnxRuntimeBackend
    from edgeseg.spec import preprocess

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(3, SPEC.height, SPEC.width, 3), dtype=np.uint8)
    ort = OnnxRuntimeBackend(folder / "model.onnx")
    logits = np.concatenate([ort.infer(preprocess(f, SPEC, "RGB")).copy() for f in frames])
    ort.close()
    meta = {"model": MODEL_NAME, "num_classes": int(logits.shape[1]), "input_spec": SPEC.to_dict()}
    return save_reference(folder / REFERENCE_FILE, Reference.from_logits(frames, logits, meta))


def test_best_picks_the_fastest_candidate_that_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three fake runtimes: a slow right one, a fast WRONG one (fails the gates) and a middling right one: the
    middling one is kept, and selection.json lists all three with their agreement and p50. A fake clock: each
    runtime 'takes' a fixed time, so the order holds on a busy machine."""
    import types

    from edgeseg.pipeline import bench
    from edgeseg.pipeline.best import SelectionResult, _measure_and_pick
    from edgeseg.pipeline.build import BuildOptions

    folder = validated_build(tmp_path / "b")
    _reference_of(folder)
    now = [100.0]
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    class Timed(FakeBackend):
        def infer(self, x: np.ndarray) -> np.ndarray:
            now[0] += {"slow": 0.02, "wrong": 0.0, "mid": 0.005}[self.name]
            return super().infer(x)

    names = {"slow": 0.0, "wrong": 50.0, "mid": 0.0}
    for name in names:
        registry.register_backend(BackendInfo(name, lambda p, *, threads=None, manifest=None, folder=None, **o:
                                              Timed(Path(p), **o), roles=("onnx",), builds=True))
    try:
        candidates = [(f"{name}:model.onnx", Candidate(name, "onnx", "fp32", {"label": name, "bias": bias}),
                       folder / "model.onnx") for name, bias in names.items()]
        options = BuildOptions(min_agreement=0.99, max_miou_drop=100.0, bench_iterations=5, threads=1)
        selection = _measure_and_pick(candidates, options, folder, log=lambda _: None)
    finally:
        for name in names:
            registry.unregister_backend(name)
    rows = selection.candidates
    assert not rows["wrong:model.onnx"].passed and rows["wrong:model.onnx"].agreement < 0.99
    assert rows["slow:model.onnx"].passed and rows["mid:model.onnx"].passed
    assert rows["wrong:model.onnx"].p50_ms < rows["mid:model.onnx"].p50_ms < rows["slow:model.onnx"].p50_ms
    assert selection.chosen == "mid:model.onnx" and selection.backend == "mid"
    written = json.loads((folder / "selection.json").read_text())
    assert written["chosen_file"] == "model.onnx" and SelectionResult.from_dict(written) == selection
    assert set(written["candidates"]["mid:model.onnx"]) == {"backend", "file", "precision", "options", "passed",
                                                           "agreement", "miou_drop_points", "failures", "p50_ms"}
    assert selection.manifest_record()["backend"] == "mid"
    assert selection.runtime_record() == {"backend": "mid", "label": "mid", "bias": 0.0}


def test_best_candidates_come_from_the_registry(fake_backend: BackendInfo, tmp_path: Path) -> None:
    from edgeseg.pipeline.best import candidates_here

    (tmp_path / "model.onnx").write_bytes(b"x")
    found = {key: c.backend for key, c, _ in candidates_here("onnxruntime", "auto", tmp_path)}
    assert found["model.onnx"] == "onnxruntime" and found["fake:model.onnx"] == "fake"
    assert "model.int8.ort.onnx" not in found  # no such file in the folder
    only = candidates_here("fake", "fake", tmp_path)
    assert [c.backend for _, c, _ in only] == ["fake"]


def test_a_missing_package_names_the_extra(tmp_path: Path) -> None:
    registry.register_backend(BackendInfo("ghost", "edgeseg.nosuch:open", roles=("onnx",),
                                          requires="edgeseg_no_such_package", extra="ghost"))
    try:
        from edgeseg.errors import DependencyError

        with pytest.raises(DependencyError) as caught:
            registry.open_backend("ghost", save_conv_onnx(tmp_path / "m.onnx", spec=SPEC))
        assert "pip install 'edgeseg[ghost]'" in str(caught.value)
        assert not registry.backend_info("ghost").available()
    finally:
        registry.unregister_backend("ghost")


def test_bench_times_a_registered_backend(fake_backend: BackendInfo, tmp_path: Path) -> None:
    folder = validated_build(tmp_path / "b")
    result = CliRunner().invoke(main, ["bench", "--artifacts", str(folder), "--backend", "fake", "--iterations", "2",
                                       "--warmup", "0", "--no-plot"])
    assert result.exit_code == 0, result.output
    bench = json.loads((folder / "bench.json").read_text())
    assert {"ort-fp32", "fake-fp32"} <= {r["name"] for r in bench["runners"]}
    assert next(r for r in bench["runners"] if r["name"] == "fake-fp32")["backend"] == "fake"
    alone = CliRunner().invoke(main, ["bench", "--onnx", str(folder / "model.onnx"), "--backend", "fake"])
    assert alone.exit_code == 2 and "--backend times a build folder's files" in alone.output
