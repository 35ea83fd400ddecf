"""`edgeseg run` outputs (issue #24): a --save bag's default topics follow the topic the bag source resolved,
its messages keep the input's log times (and a zero header stamp stays zero); exit codes of unreadable
sources; what the FPS rows count; a one-frame run's frame count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.bags import gradient_frames, write_image_bag
from helpers.tiny_onnx import write_images
from helpers.validated_build import validated_build

from edgeseg.cli import main

TOPIC = "/cam/front/image_raw"


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return validated_build(tmp_path_factory.mktemp("build") / "tiny")


def read_messages(path: Path) -> dict[str, list[tuple[int, int]]]:
    """topic -> [(log time ns, header stamp ns)] of every message."""
    highlevel = pytest.importorskip("rosbags.highlevel")
    from edgeseg.runtime.ros_image import default_typestore

    out: dict[str, list[tuple[int, int]]] = {}
    with highlevel.AnyReader([path], default_typestore=default_typestore()) as reader:
        for connection, log_time, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            out.setdefault(connection.topic, []).append((log_time, stamp))
    return out


def test_default_topics_follow_the_resolved_topic_and_log_times_are_kept(build: Path, tmp_path: Path) -> None:
    # a camera stamping on its own clock (1234 s, one of them never set) recorded at wall-clock log times
    stamps = [1_234_000_000_000, 0, 1_234_200_000_000]
    logs = [1_700_000_000_000_000_000 + i * 100_000_000 for i in range(3)]
    bag = write_image_bag(tmp_path / "in.mcap", "mcap", gradient_frames(3), topic=TOPIC, stamps=stamps,
                          log_times=logs)
    out = tmp_path / "out.mcap"
    result = CliRunner().invoke(main, ["run", "--artifacts", str(build), "--source", f"bag:{bag}", "--save",
                                       str(out), "--threads", "1"])  # no --topic: the bag's only image topic
    assert result.exit_code == 0, result.output
    written = read_messages(out)
    assert set(written) == {TOPIC + "/edgeseg/mask", TOPIC + "/edgeseg/overlay"}, written.keys()
    for topic in written:
        assert written[topic] == list(zip(logs, stamps, strict=True)), topic  # log times as recorded; stamp 0 stays 0
    assert f"{TOPIC}/edgeseg/mask" in result.output
    data = json.loads(out.with_suffix(".run.json").read_text())
    assert data["outputs"]["bag_topics"] == [TOPIC + "/edgeseg/mask", TOPIC + "/edgeseg/overlay"]
    assert "writing the bag" in data["fps_includes"]


def test_bag_writer_keeps_a_zero_header_stamp(tmp_path: Path) -> None:
    from edgeseg.runtime.bag_writer import BagMaskWriter
    from edgeseg.runtime.bags import iter_bag_frames

    logs = [1_700_000_000_000_000_000, 1_700_000_000_100_000_000]
    bag = write_image_bag(tmp_path / "in.mcap", "mcap", gradient_frames(2), topic=TOPIC, stamps=[0, 5],
                          log_times=logs)
    with BagMaskWriter(tmp_path / "o.mcap", TOPIC) as writer:
        for frame in iter_bag_frames(bag):
            writer.write(frame, frame.rgb[:, :, 0] % 3)
    assert read_messages(tmp_path / "o.mcap")[TOPIC + "/edgeseg/mask"] == [(logs[0], 0), (logs[1], 5)]


def test_corrupt_and_empty_folders_are_both_user_errors(build: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "a.png").write_bytes(b"not a png")
    (tmp_path / "corrupt" / "b.jpg").write_bytes(b"")
    for name in ("empty", "corrupt"):
        result = CliRunner().invoke(main, ["run", "--artifacts", str(build), "--source", str(tmp_path / name)])
        assert result.exit_code == 1, (name, result.output)
        assert "Traceback" not in result.output


def test_one_image_run_says_its_only_frame_is_in_the_figures(build: Path, tmp_path: Path) -> None:
    write_images(tmp_path / "frames", 1)
    image = next((tmp_path / "frames").iterdir())
    result = CliRunner().invoke(main, ["run", "--artifacts", str(build), "--source", str(image), "--save",
                                       str(tmp_path / "ov")])
    assert result.exit_code == 0, result.output
    assert "the first left out" not in result.output
    assert "the only one, in the figures" in result.output
    assert json.loads((tmp_path / "ov" / "run.json").read_text())["latency"]["frames"] == 1


def test_fps_rows_say_what_the_end_to_end_figure_counts(build: Path, tmp_path: Path) -> None:
    write_images(tmp_path / "frames", 3)
    result = CliRunner().invoke(main, ["run", "--artifacts", str(build), "--source", str(tmp_path / "frames"),
                                       "--save", str(tmp_path / "ov")])
    assert result.exit_code == 0, result.output
    end_to_end = next(line for line in result.output.splitlines() if "FPS end-to-end" in line)
    assert "writing overlay PNGs" in end_to_end
    assert "FPS mask only" in result.output and "the model alone" in result.output


def test_a_bad_video_prints_no_native_warnings_before_the_error(build: Path, tmp_path: Path,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("cv2")
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    result = CliRunner().invoke(main, ["run", "--artifacts", str(build), "--source", str(bad)])
    native = capfd.readouterr().err  # what FFmpeg / OpenCV wrote on file descriptor 2, outside click's capture
    assert result.exit_code == 1 and "cannot open video source" in result.output, result.output
    assert "moov atom" not in native and "[mov" not in native, native
    assert "moov atom not found" in result.output  # folded into our error's "found" instead


def test_an_unfinished_build_is_not_called_an_export(build: Path, tmp_path: Path) -> None:
    import shutil

    from edgeseg.pipeline.step_cache import StepRunner

    write_images(tmp_path / "frames", 1)
    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(build / "model.onnx", export / "model.onnx")
    result = CliRunner().invoke(main, ["run", "--artifacts", str(export), "--source", str(tmp_path / "frames")])
    assert result.exit_code == 1 and "holds an export" in result.output, result.output

    stopped = tmp_path / "stopped"  # a build stopped after export and calibrate (Ctrl-C, or an error)
    shutil.copytree(build, stopped)
    (stopped / "manifest.json").unlink()
    runner = StepRunner(stopped, log=lambda line: None)
    for step in ("export", "calibrate"):
        runner.run(step, {"step": step}, [stopped / "model.onnx"], lambda: None)
    result = CliRunner().invoke(main, ["run", "--artifacts", str(stopped), "--source", str(tmp_path / "frames")])
    assert result.exit_code == 1, result.output
    assert "holds an export" not in result.output and "did not finish" in result.output
    assert "steps done: export, calibrate" in result.output
    assert f"edgeseg build --onnx {stopped / 'model.onnx'} --out {stopped}" in result.output
