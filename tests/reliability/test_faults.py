"""Issue 7 faults: interrupted builds, threads, bad frames, cameras that stop, long runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from helpers.tiny_onnx import save_conv_onnx

from edgeseg.errors import InputError
from edgeseg.manifest import Manifest, ValidationVerdict
from edgeseg.spec import InputSpec

ROOT = Path(__file__).resolve().parents[2]
MODEL = "shufflenetv2_x0_5_dspp"
SPEC = InputSpec(32, 64)


@pytest.fixture(scope="module")
def calib_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeseg.data.generate import SynthConfig, write_synthetic_dataset

    root = tmp_path_factory.mktemp("calib")
    write_synthetic_dataset(SynthConfig(out=root, num=6, height=128, width=128, seed=9))
    return root / "images"


def build_args(out: Path, calib: Path) -> list[str]:
    return [sys.executable, "-m", "edgeseg", "build", "--model", MODEL, "--input-size", "128x128", "--calib",
            str(calib), "--calib-images", "6", "--min-agreement", "0", "--max-miou-drop", "100", "--out", str(out)]


ARTIFACTS = ("model.onnx", "model.int8.onnx", "model.int8.ort.onnx", "calibration.cache", "ranges.json")


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", ["export", "calibrate"])
def test_killed_build_resumes_to_identical_artifacts(tmp_path: Path, calib_images: Path, kill_after: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    clean = tmp_path / "clean"
    subprocess.run(build_args(clean, calib_images), env=env, check=True, capture_output=True, timeout=600)

    broken = tmp_path / "broken"
    proc = subprocess.Popen(build_args(broken, calib_images), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    state = broken / "steps.json"
    while time.time() < deadline and proc.poll() is None:  # kill as soon as the step is recorded
        if state.is_file() and kill_after in state.read_text():
            break
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not any(p.name.endswith(".tmp") and not p.name.startswith(".") for p in broken.iterdir())
    subprocess.run(build_args(broken, calib_images), env=env, check=True, capture_output=True, timeout=600)
    for name in ARTIFACTS:
        assert (broken / name).read_bytes() == (clean / name).read_bytes(), name
    assert not list(broken.glob(".*.tmp")), "temporary files left behind"


def tiny_folder(root: Path) -> Path:
    from edgeseg.fileio import sha256_file
    from edgeseg.manifest import write_manifest

    save_conv_onnx(root / "model.onnx", spec=SPEC, num_classes=4, kernel=3, metadata=False)
    manifest = Manifest(model="tiny", num_classes=4, input_spec=SPEC, artifacts={"onnx": "model.onnx"},
                        hashes={"onnx": sha256_file(root / "model.onnx")},
                        validation=ValidationVerdict(status="passed", candidate="onnx"))
    write_manifest(root, manifest)
    return root


def frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (48, 80, 3), dtype=np.uint8) for _ in range(count)]


def test_two_segmenters_in_two_threads_match_one(tmp_path: Path) -> None:
    from edgeseg.runtime import Segmenter

    folder = tiny_folder(tmp_path / "tiny")
    inputs = frames(40)
    single = Segmenter.from_artifacts(folder, backend="onnxruntime", threads=1)
    expected = [single(f).copy() for f in inputs]
    single.close()
    results: dict[int, list[np.ndarray]] = {}

    def worker(index: int) -> None:
        seg = Segmenter.from_artifacts(folder, backend="onnxruntime", threads=1)
        results[index] = [seg(f).copy() for f in inputs]
        seg.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for index in range(2):
        assert all(np.array_equal(a, b) for a, b in zip(results[index], expected, strict=True))


def test_bad_frame_does_not_disturb_the_next(tmp_path: Path) -> None:
    from edgeseg.runtime import Segmenter

    seg = Segmenter.from_artifacts(tiny_folder(tmp_path / "tiny"), backend="onnxruntime", threads=1)
    good = frames(1)[0]
    before = seg(good).copy()
    for bad in (good.astype(np.float32), good[:, :, :2], good[:, :, 0], np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(InputError):
            seg(bad)
    assert np.array_equal(seg(good), before)
    seg.close()


def test_camera_that_stops_ends_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeseg.runtime.sources import SourceStats, frames

    class Capture:
        def __init__(self, index: int) -> None:
            self.reads = 0

        def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
            return True

        def read(self) -> tuple[bool, np.ndarray | None]:
            self.reads += 1
            return (True, np.zeros((4, 4, 3), np.uint8)) if self.reads <= 3 else (False, None)

        def release(self) -> None:
            pass

    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(VideoCapture=Capture))
    stats = SourceStats()
    got = list(frames("0", stats, max_failures=5, latest=False))
    assert len(got) == 3 and stats.frames == 3 and "no frame 5 times" in stats.ended_because


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_soak_20000_frames_without_memory_growth(tmp_path: Path) -> None:
    from edgeseg.runtime import Segmenter

    seg = Segmenter.from_artifacts(tiny_folder(tmp_path / "tiny"), backend="onnxruntime", threads=1)
    pool = frames(16)
    for frame in pool * 32:  # warm-up
        seg(frame)
    start = rss_bytes()
    for index in range(20_000):
        seg(pool[index % len(pool)])
    growth = (rss_bytes() - start) / start
    seg.close()
    assert growth < 0.05, f"resident memory grew {growth:.1%} over 20,000 frames"
