"""edgeseg.report.writer: report.md + report.json + plots, with and without matplotlib."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseg.fileio import sha256_file
from edgeseg.images import load_image, save_png
from edgeseg.manifest import Manifest
from edgeseg.parity import ParityTally
from edgeseg.pipeline.bench import BenchResult, Runner, RunnerStats
from edgeseg.pipeline.validate import ValidationConfig, ValidationResult, check_gates
from edgeseg.report.writer import IOU_PLOT, LATENCY_PLOT, LEGEND_PLOT, NO_PLOTS, REPORT_JSON, REPORT_MD, write_report
from edgeseg.spec import InputSpec

LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def make_build(folder: Path) -> Manifest:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"onnx bytes")
    (folder / "model.int8.onnx").write_bytes(b"qdq bytes")
    return Manifest(model="shufflenetv2_x0_5_mdspp", num_classes=3, input_spec=InputSpec(64, 128),
                    classes=["road", "car", "sky"], precision="int8",
                    artifacts={"onnx": "model.onnx", "onnx_int8_trt": "model.int8.onnx", "engine": "model.engine"},
                    hashes={"onnx": sha256_file(folder / "model.onnx"), "onnx_int8_trt": "0" * 64})


def make_validation(folder: Path) -> ValidationResult:
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[:, 4:] = 1
    labels[6:, :] = 2
    flipped = labels.copy()
    flipped[0, :3] = 1

    def logits(lab: np.ndarray) -> np.ndarray:
        out = np.zeros((1, 3, 8, 8), np.float32)
        for c in range(3):
            out[0, c][lab == c] = 1.0
        return out

    tally = ParityTally(3)
    tally.add("s0", logits(labels), logits(flipped), truth=labels)
    overlay = save_png(folder / "validation_overlays" / "worst_01_s0.png", np.zeros((8, 28, 3), np.uint8))
    config = ValidationConfig()
    return ValidationResult(
        candidate=str(folder / "model.int8.onnx"), reference=str(folder / "reference.npz"),
        reference_kind="reference.npz", input_spec=InputSpec(64, 128), num_classes=3,
        classes=["road", "car", "sky"], parity=tally.summary(), ground_truth=tally.truth_summary(),
        per_class=tally.per_class(["road", "car", "sky"]), per_image=tally.per_image,
        gates=check_gates(tally.summary(), tally.truth_summary(), config), config={},
        files=[str(folder / "validation.json"), str(overlay)])


def make_bench() -> BenchResult:
    stats = [RunnerStats.from_samples(Runner(name, "onnxruntime", "fp32", lambda x: x), samples)
             for name, samples in (("ort-fp32", [10.0, 11.0, 12.0, 30.0]), ("ort-int8", [5.0, 5.5, 6.0, 7.0]))]
    return BenchResult(stats, iterations=4, warmup=1, input_shape=[1, 3, 64, 128], threads=2,
                       machine={"cpu": "test cpu", "cores": 2, "usable_cores": 2, "libraries": {"numpy": "2"}})


def links(markdown: str) -> list[str]:
    return LINK.findall(markdown)


def test_report_with_plots_links_existing_files(tmp_path: Path) -> None:
    manifest = make_build(tmp_path)
    written = write_report(tmp_path, manifest=manifest, validation=make_validation(tmp_path), bench=make_bench(),
                           calibration={"method": "entropy", "images": 100}, export={"opset": 17})
    assert {p.name for p in written} == {REPORT_MD, REPORT_JSON, IOU_PLOT, LATENCY_PLOT, LEGEND_PLOT}
    markdown = (tmp_path / REPORT_MD).read_text()
    found = links(markdown)
    assert IOU_PLOT in found and LATENCY_PLOT in found and "validation_overlays/worst_01_s0.png" in found
    for link in found:
        assert not Path(link).is_absolute() and (tmp_path / link).is_file(), link
    assert load_image(tmp_path / IOU_PLOT).shape[2] == 3
    assert "| method | entropy |" in markdown and "| ort-int8 |" in markdown
    assert "| 0.50x |" in markdown  # ort-int8 p50 5.75 / ort-fp32 p50 11.5
    report = json.loads((tmp_path / REPORT_JSON).read_text())
    ratio = report["latency"]["ratios"]["ort-int8"]["vs_ort-fp32"]
    assert ratio == pytest.approx(np.median([5.0, 5.5, 6.0, 7.0]) / np.median([10.0, 11.0, 12.0, 30.0]))
    rows = {a["role"]: a for a in report["artifacts"]}
    assert rows["onnx"]["sha256"] == sha256_file(tmp_path / "model.onnx") and rows["onnx"]["matches_manifest"]
    assert rows["onnx_int8_trt"]["matches_manifest"] is False  # recorded hash differs from the file
    assert rows["engine"]["exists"] is False
    assert report["accuracy"]["parity"]["agreement"] == pytest.approx(61 / 64)
    assert report["notes"] == []
    assert [e["colour"] for e in report["legend"]][:2] == ["#804080", "#f423e8"]  # the class palette
    assert "## Class colours" in markdown and LEGEND_PLOT in found and "disagreement" in markdown


def test_report_says_when_int8_is_slower_and_figures_are_noisy(tmp_path: Path) -> None:
    manifest = make_build(tmp_path)
    stats = [RunnerStats.from_samples(Runner(name, "onnxruntime", precision, lambda x: x), samples)
             for name, precision, samples in (("ort-fp32", "fp32", [5.0, 5.1, 5.2, 5.3]),
                                              ("ort-int8", "int8", [6.0, 6.1, 15.0, 16.0]))]
    bench = BenchResult(stats, iterations=4, warmup=1, input_shape=[1, 3, 64, 128], threads=2,
                        machine={"cpu": "test cpu", "cores": 2, "usable_cores": 2},
                        load_average={"start": 3.5, "end": 3.0, "usable_cores": 2, "busy_above": 1.0})
    write_report(tmp_path, manifest=manifest, bench=bench)
    markdown = (tmp_path / REPORT_MD).read_text()
    assert "ort-int8 is SLOWER than ort-fp32" in markdown and "These figures are NOISY" in markdown
    assert "load average 3.50 at the start" in markdown and "latency ratio vs ORT FP32" in markdown


def test_report_is_deterministic_apart_from_the_timestamp(tmp_path: Path) -> None:
    manifest = make_build(tmp_path)
    validation, bench = make_validation(tmp_path), make_bench()
    write_report(tmp_path, manifest=manifest, validation=validation, bench=bench)
    first = json.loads((tmp_path / REPORT_JSON).read_text())
    first_md = (tmp_path / REPORT_MD).read_text().splitlines()
    first_png = (tmp_path / IOU_PLOT).read_bytes()
    write_report(tmp_path, manifest=manifest, validation=validation, bench=bench)
    second = json.loads((tmp_path / REPORT_JSON).read_text())
    first.pop("generated"), second.pop("generated")
    assert first == second
    second_md = (tmp_path / REPORT_MD).read_text().splitlines()
    assert [line for line in first_md if not line.startswith("Generated")] == \
        [line for line in second_md if not line.startswith("Generated")]
    assert (tmp_path / IOU_PLOT).read_bytes() == first_png


def test_report_without_matplotlib_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    manifest = make_build(tmp_path)
    written = write_report(tmp_path, manifest=manifest, validation=make_validation(tmp_path), bench=make_bench())
    assert {p.name for p in written} == {REPORT_MD, REPORT_JSON}
    assert not (tmp_path / IOU_PLOT).exists() and not (tmp_path / LATENCY_PLOT).exists()
    markdown = (tmp_path / REPORT_MD).read_text()
    assert NO_PLOTS in markdown
    for link in links(markdown):
        assert (tmp_path / link).is_file(), link
    assert json.loads((tmp_path / REPORT_JSON).read_text())["plots"] == {}


def test_report_of_a_bare_manifest(tmp_path: Path) -> None:
    manifest = make_build(tmp_path)
    write_report(tmp_path, manifest=manifest.to_dict())
    markdown = (tmp_path / REPORT_MD).read_text()
    assert "Not validated" in markdown and "Not measured" in markdown and links(markdown) == [LEGEND_PLOT]
    assert json.loads((tmp_path / REPORT_JSON).read_text())["machine"]["cores"] >= 1
