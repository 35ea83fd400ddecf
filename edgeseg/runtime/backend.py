"""The small interface every inference backend implements (layer 1, numpy only).

Host path (all backends): ``infer(x)`` takes the preprocessed 1x3xHxW float32 input and
returns 1xCxHxW logits as a numpy array. GPU backends additionally run on device
buffers inside the ``Segmenter`` without touching the host (see segmenter.py).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

BACKENDS = ("tensorrt", "onnxruntime", "torch")


@runtime_checkable
class Backend(Protocol):
    name: str  # one of BACKENDS
    input_name: str
    output_name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    def infer(self, x: np.ndarray) -> np.ndarray:
        """1x3xHxW float32 -> 1xCxHxW float32 logits (a new array or a reused buffer)."""
        ...

    def close(self) -> None:
        ...
