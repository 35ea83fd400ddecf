"""Exact float32 in PyTorch's CUDA convolutions and matmuls, for GPU-vs-CPU comparisons.

PyTorch lets cuDNN convolutions use TF32 by default (torch.backends.cudnn.allow_tf32 = True) on Ampere and
later (Orin, A100, H100/H200): a 10-bit mantissa, so GPU logits differ from the CPU's by ~1e-3 relative and a
top-2 gap of 1e-3 no longer decides a pixel. Comparisons against the CPU run inside ``exact_float32()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off for cuDNN convolutions and CUDA matmuls inside the block; the previous settings restored."""
    import torch

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32)
    matmul.allow_tf32, cudnn.allow_tf32 = False, False
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved
