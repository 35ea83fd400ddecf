"""A fake ``cv2.VideoCapture``: ``count`` frames ``period`` s apart (pixel value = frame number mod 256), then
failed reads, as a camera that stops. Subclass to change the numbers, the frame shape or a method."""

from __future__ import annotations

import time

import numpy as np


class FakeCapture:
    count, period, shape = 60, 0.001, (4, 4, 3)

    def __init__(self, *args: object) -> None:
        self.reads = 0
        self.settings: dict[int, float] = {}

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        time.sleep(self.period)
        self.reads += 1
        if self.reads > self.count:
            return False, None
        return True, np.full(self.shape, self.reads % 256, np.uint8)

    def release(self) -> None:
        pass

    def set(self, prop: int, value: float) -> bool:
        self.settings[prop] = value
        return True

    def get(self, prop: int) -> float:
        return self.settings.get(prop, 0.0)
