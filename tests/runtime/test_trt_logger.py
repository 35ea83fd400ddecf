"""The process-wide TensorRT logger (edgeseg.runtime.trt_logger) against the fake tensorrt module."""

from __future__ import annotations

import pytest
from helpers.fake_tensorrt import Severity, make_fake_trt

from edgeseg.runtime.trt_logger import capture_log, enum_name, process_logger


def test_one_logger_per_tensorrt_module_made_on_first_use() -> None:
    trt, other = make_fake_trt(), make_fake_trt()
    logger = process_logger(trt)
    assert isinstance(logger, trt.ILogger) and process_logger(trt) is logger
    assert process_logger(other) is not logger  # each fake module stands for its own process


def test_a_capture_sees_only_what_is_logged_while_it_is_open() -> None:
    trt = make_fake_trt()
    logger = process_logger(trt)
    logger.log(Severity.ERROR, "before")
    with capture_log(trt) as outer:
        logger.log(Severity.ERROR, "first")
        with capture_log(trt) as inner:
            logger.log(Severity.WARNING, "careful")
            logger.log(Severity.INTERNAL_ERROR, "second")
            logger.log(Severity.INFO, "chatter")
        logger.log(Severity.ERROR, "third")
    logger.log(Severity.ERROR, "after")
    assert outer.errors == ["first", "second", "third"] and outer.warnings == ["careful"]
    assert inner.errors == ["second"] and inner.warnings == ["careful"]
    assert outer.tail(2) == "second\nthird" and inner.tail() == "second"


def test_verbose_capture_prints_every_message(capsys: pytest.CaptureFixture[str]) -> None:
    trt = make_fake_trt()
    with capture_log(trt, verbose=True):
        process_logger(trt).log(Severity.VERBOSE, "tactic 7: 0.1 ms")
    with capture_log(trt):
        process_logger(trt).log(Severity.VERBOSE, "not printed")
    assert capsys.readouterr().out == "[TensorRT] tactic 7: 0.1 ms\n"


def test_log_never_raises_into_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    trt = make_fake_trt()
    logger = process_logger(trt)

    def broken(level: str, msg: str) -> None:
        raise RuntimeError("a bug in the sink")

    monkeypatch.setattr(logger.sink, "dispatch", broken)
    logger.log(Severity.ERROR, "x")  # TensorRT calls log() from C++: an exception there aborts the process


def test_enum_names() -> None:
    assert enum_name(Severity.INTERNAL_ERROR) == "INTERNAL_ERROR"
    assert enum_name("Severity.WARNING") == "WARNING"
