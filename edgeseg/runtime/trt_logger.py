"""The one TensorRT logger of the process (layer 1; the ``tensorrt`` module is passed in, never imported here).

TensorRT keeps a single logger pointer: the first ILogger given to a Builder, Runtime or Refitter
receives every later message, whatever logger later objects were given (NVIDIA/TensorRT#1475). So
every Builder, OnnxParser and Runtime gets ``process_logger(trt)``, made on first use, and each build
or session step collects what was logged during its own work with ``capture_log``::

    with capture_log(trt) as log:
        engine = runtime.deserialize_cuda_engine(data)
    if engine is None: ... log.errors ...

An open capture receives every message logged while it is open, from any thread: TensorRT does not
say which object a message came from, so two builds running at once see each other's messages.
"""

from __future__ import annotations

import _thread
import contextlib
import sys
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

ERROR_LEVELS = frozenset({"INTERNAL_ERROR", "ERROR"})


def enum_name(member: Any) -> str:
    """A TensorRT enum member's name: ``trt.ILogger.Severity.ERROR`` -> ``"ERROR"`` (pybind11 enums have
    ``.name``; fakes may pass strings)."""
    return str(getattr(member, "name", member)).split(".")[-1]



@dataclass
class LogCapture:
    """What TensorRT logged while one build or session step ran; ``verbose`` also prints every message."""

    verbose: bool = False
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def tail(self, count: int = 5) -> str:
        """The last ``count`` errors, one a line ("" when none), for an error message's ``found``."""
        return "\n".join(self.errors[-count:])


class LogSink:
    """The Python side of the process logger: the open captures (thread safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[LogCapture] = []

    def add(self, capture: LogCapture) -> None:
        with self._lock:
            self._open.append(capture)

    def remove(self, capture: LogCapture) -> None:
        with self._lock:
            self._open = [c for c in self._open if c is not capture]

    def dispatch(self, level: str, msg: str) -> None:
        with self._lock:
            captures = list(self._open)
        for capture in captures:
            if level in ERROR_LEVELS:
                capture.errors.append(msg)
            elif level == "WARNING":
                capture.warnings.append(msg)
        if any(capture.verbose for capture in captures):
            print(f"[TensorRT] {msg}", file=sys.stdout, flush=True)


# One logger per tensorrt module object: one per process with the real module; each fake module in the
# tests gets its own. Weak keys, so a discarded fake module takes its logger with it.
_LOGGERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_LOGGERS_LOCK = threading.Lock()


def _make_logger(trt: Any) -> Any:
    base: Any = trt.ILogger  # bound here: the class must not refer to the module (it is the weak key)
    sink = LogSink()

    class ProcessLogger(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.sink = sink

        def log(self, severity: Any, msg: str) -> None:
            # TensorRT calls this from C++, where an exception cannot pass: never raise out of it.
            try:
                sink.dispatch(enum_name(severity), str(msg))
            except KeyboardInterrupt:
                _thread.interrupt_main()  # deliver Ctrl-C once control is back in Python
            except Exception:
                pass

    return ProcessLogger()


def process_logger(trt: Any) -> Any:
    """The ILogger every Builder, OnnxParser and Runtime of this ``tensorrt`` module is given."""
    with _LOGGERS_LOCK:
        logger = _LOGGERS.get(trt)
        if logger is None:
            logger = _make_logger(trt)
            _LOGGERS[trt] = logger
        return logger


@contextlib.contextmanager
def capture_log(trt: Any, *, verbose: bool = False) -> Iterator[LogCapture]:
    """Collect the errors and warnings TensorRT logs while the block runs (captures may nest)."""
    sink: LogSink = process_logger(trt).sink
    capture = LogCapture(verbose=verbose)
    sink.add(capture)
    try:
        yield capture
    finally:
        sink.remove(capture)
