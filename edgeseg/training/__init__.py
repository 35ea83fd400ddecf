"""Training and evaluation on folder datasets (layer 3, torch).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "TrainConfig": ".trainer",
    "train": ".trainer",
    "evaluate_folder": ".evaluation",
}

__all__ = [*_LAZY]
__getattr__ = lazy_exports(__name__, _LAZY)
