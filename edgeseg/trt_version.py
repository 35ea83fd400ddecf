"""TensorRT versions: parse, compare, print, cache-header number, which release has what (layer 0: stdlib only).

The one owner of TensorRT version handling, used by the robot's engine checks (``runtime.compat``), the build
plan (``engine.versions``) and the calibration cache (``trt_cache_format``); it sits at the package top and
imports nothing but the stdlib and ``errors``, so the robot, ``quant`` and ``engine`` can all use it.

Version facts: 8.5 needs EXPLICIT_BATCH and precision flags; 8.6 added VERSION_COMPATIBLE and
builder_optimization_level; 10.x offers STRONGLY_TYPED (used for Q/DQ networks); DLA support ended with 10.7
and came back in 11.4.1 (AGX Orin, JetPack 7.2.2+); 11.x is always strongly typed and has no precision flags
and no calibrators.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigError, EdgesegError

_VERSION_RE = re.compile(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?")
# The releases that build for and run on the DLA (TrtVersion.has_dla), as error messages name them.
DLA_RELEASES = "TensorRT 10.7 or earlier, or 11.4.1 or later (AGX Orin, JetPack 7.2.2+)"


@dataclass(frozen=True, order=True)
class TrtVersion:
    """(major, minor, patch) of a TensorRT release; compares in release order, prints as ``10.3.0``."""

    major: int
    minor: int = 0
    patch: int = 0

    @classmethod
    def parse(cls, text: str | TrtVersion, *, error: type[EdgesegError] = ConfigError) -> TrtVersion:
        """``"10.3.0.30"`` -> TrtVersion(10, 3, 0) (the build number and any suffix are dropped).

        ``error`` is the exception raised for an unreadable version: ConfigError for an option,
        ArtifactError for a version read from a file.
        """
        if isinstance(text, TrtVersion):
            return text
        match = _VERSION_RE.match(str(text))
        if not match:
            raise error("cannot read the TensorRT version", expected="e.g. 10.3.0", found=repr(text))
        return cls(int(match.group(1)), int(match.group(2) or 0), int(match.group(3) or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def cache_number(self) -> int:
        """The number in a calibration cache header (TensorRT's NV_TENSORRT_VERSION).

        TensorRT 8.x: major*1000 + minor*100 + patch (8.6.1 -> 8601); TensorRT 10:
        major*10000 + minor*100 + patch (10.3.0 -> 100300). ConfigError for any other release:
        11 has no calibrators, and 9.x (no JetPack release) is not supported here.
        """
        if self.major == 8 and self.minor <= 9 and self.patch <= 99:
            return self.major * 1000 + self.minor * 100 + self.patch
        if self.major == 10 and self.minor <= 99 and self.patch <= 99:
            return self.major * 10000 + self.minor * 100 + self.patch
        if self.major in (8, 10):
            raise ConfigError("TensorRT version out of range for a calibration cache header", found=str(self))
        if self.major < 11:  # 7.x and older, or 9.x (no JetPack release): the robot has 8.5 (JetPack 5) or 10.x
            raise ConfigError(
                f"TensorRT {self} is not supported: calibration caches are written for TensorRT 8.5 - 10.x",
                expected="a version from 8.5 to 10.x (JetPack 5: 8.5, JetPack 6: 10.3)", found=str(self),
                fix="pass the robot's TensorRT version (on the Jetson: dpkg -l | grep nvinfer), e.g. "
                    "--trt-version 8.5.2",
            )
        raise ConfigError(
            "TensorRT calibration caches are written here for TensorRT 8.x and 10.x only "
            "(implicit INT8 was removed in TensorRT 11)",
            expected="a version from 8.5 to 10.x", found=str(self),
            fix="use model.int8.onnx (explicit Q/DQ) with TensorRT 11",
        )

    # Feature queries: the only place that knows which release introduced or removed what.
    @property
    def needs_explicit_batch(self) -> bool:
        return self.major < 10

    @property
    def has_strongly_typed_flag(self) -> bool:
        return self.major == 10  # 9.x had it too, but 9.x is not a JetPack release

    @property
    def always_strongly_typed(self) -> bool:
        return self.major >= 11

    @property
    def has_precision_flags(self) -> bool:
        return self.major < 11

    @property
    def has_calibrator(self) -> bool:
        return self.major < 11

    @property
    def has_dla(self) -> bool:
        """DLA support ended with 10.7 (10.8 to 11.4.0 have none) and came back in 11.4.1: DLA_RELEASES."""
        return self < TrtVersion(10, 8) or self >= TrtVersion(11, 4, 1)

    @property
    def has_version_compatible(self) -> bool:
        return (self.major, self.minor) >= (8, 6)

    @property
    def has_optimization_level(self) -> bool:
        return (self.major, self.minor) >= (8, 6)
