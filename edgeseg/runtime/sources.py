"""Frame sources for ``edgeseg run``: an image folder, a video file or a camera (layer 1).

Every source yields ``(name, frame)`` with ``frame`` a uint8 HxWx3 RGB array. Video and
cameras need OpenCV (``pip install 'edgeseg[video]'``), imported only when used. A
camera that stops delivering frames ends the iteration after ``max_failures`` reads in
a row instead of hanging or raising deep inside OpenCV.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, require
from ..images import IMAGE_EXTENSIONS, list_images, load_image

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")


@dataclass
class SourceStats:
    frames: int = 0
    skipped: int = 0
    ended_because: str = ""


def describe_source(source: str) -> str:
    if source.isdigit():
        return "camera"
    path = Path(source)
    if path.is_dir():
        return "folder"
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return "video"
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return "image"
    raise InputError(
        f"cannot tell what kind of source {source!r} is",
        expected="an image folder, an image file, a video file (" + ", ".join(VIDEO_EXTENSIONS) + ") or a camera index",
        found=source if path.exists() else f"{source} (does not exist)",
    )


def iter_frames(source: str, stats: SourceStats | None = None, *, max_failures: int = 30,
                skip_bad: bool = True) -> Iterator[tuple[str, np.ndarray]]:
    stats = stats if stats is not None else SourceStats()
    kind = describe_source(source)
    if kind in ("folder", "image"):
        paths = list_images(source) if kind == "folder" else [Path(source)]
        if not paths:
            raise InputError(f"no images in {source}", expected="jpg/png/bmp files")
        for path in paths:
            try:
                frame = load_image(path)
            except InputError:
                if not skip_bad:
                    raise
                stats.skipped += 1
                continue
            stats.frames += 1
            yield path.name, frame
        stats.ended_because = "end of folder"
        return
    cv2 = require("cv2", extra="video", purpose="reading videos and cameras")
    capture = cv2.VideoCapture(int(source) if kind == "camera" else source)
    if not capture.isOpened():
        raise InputError(f"cannot open {kind} {source}", fix="check the path / camera index and permissions")
    failures = 0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok or bgr is None:
                if kind == "video":
                    stats.ended_because = "end of video"
                    return
                failures += 1
                if failures >= max_failures:
                    stats.ended_because = f"camera delivered no frame {max_failures} times in a row"
                    return
                continue
            failures = 0
            stats.frames += 1
            yield f"{stats.frames:06d}", np.ascontiguousarray(bgr[:, :, ::-1])
    finally:
        capture.release()
