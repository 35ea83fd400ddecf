"""The keep-the-newest frame slot shared by the live camera loop and the ROS 2 node.

A camera faster than the model must not build a queue (every mask would be older than the last):
the slot holds one pending frame, a new frame replaces it and counts as a drop, and the consumer
always takes the newest. ``camera_sources.LatestFrameGrabber`` fills it from a capture thread,
the ROS 2 node from its subscription callback.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class SlotStats:
    received: int = 0
    dropped: int = 0  # frames replaced before the consumer took them
    taken: int = 0


class LatestFrameSlot:
    """A single-slot, keep-the-latest buffer between a producer thread and a consumer."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._pending = False
        self._closed = False
        self.stats = SlotStats()

    def put(self, item: Any) -> bool:
        """Offer a frame (never blocks); True when it replaced a pending one (a drop)."""
        with self._cond:
            replaced = self._pending
            self.stats.received += 1
            self.stats.dropped += int(replaced)
            self._item, self._pending = item, True
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> Any:
        """The newest pending frame, waiting up to ``timeout`` s (None: forever); None on timeout, or once the
        slot is closed and empty (a frame put before ``close`` is still handed out)."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._pending and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            if not self._pending:
                return None
            item, self._item, self._pending = self._item, None, False
            self.stats.taken += 1
            return item

    def close(self) -> None:
        """Wake every waiting ``take`` (they return None once the slot is empty)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
