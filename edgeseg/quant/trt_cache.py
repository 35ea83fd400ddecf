"""``calibration.cache`` from calibrated ranges (layer 2, stdlib + numpy).

This module only turns activation ranges into TensorRT's scales (amax / 127 in float32) in a fixed line
order and writes the file atomically; the format itself (header, line layout, its reader) belongs to
``edgeseg.trt_cache_format``, and the header number to ``edgeseg.trt_version``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..fileio import atomic_write_bytes
from ..trt_cache_format import format_calibration_cache
from .qdq_trt import activation_scale

DEFAULT_TRT_VERSION = "10.3.0"


def cache_scales(amax: Mapping[str, float], *, order: Sequence[str] | None = None) -> dict[str, float]:
    """Tensor name -> TensorRT scale (float32 amax / 127), in ``order`` (e.g. graph order), then sorted names."""
    names = [n for n in dict.fromkeys(order) if n in amax] if order is not None else sorted(amax)
    names += sorted(set(amax) - set(names))
    return {name: float(activation_scale(amax[name])) for name in names}


def write_trt_cache(path: str | os.PathLike[str], amax: Mapping[str, float], *,
                    order: Sequence[str] | None = None, trt_version: str = DEFAULT_TRT_VERSION) -> Path:
    """Write ``calibration.cache`` for ``trt_version`` atomically."""
    return atomic_write_bytes(path, format_calibration_cache(trt_version, cache_scales(amax, order=order)))

