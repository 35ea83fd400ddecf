"""``--fallback auto``: keep the most harmful layers in higher precision until the gates pass (layer 2).

Plain logic over two callables, so it is tested without models: ``evaluate(kept)`` builds and
checks the candidate with ``kept`` in float (the build passes one that writes the backend's INT8
file and validates it against reference.npz) and ``ranking()`` returns the layers most harmful
first (sensitivity.py, on calibration frames). Layers are added greedily in ranking order, one
per trial, until a trial passes or ``cap`` layers are kept; past the cap the result fails and
names the layers that would come next. The ranking is only computed when the all-INT8
candidate fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import UsageError

FALLBACK_MODES = ("off", "auto")
DEFAULT_CAP = 8
SHOWN_NEXT = 5


@dataclass(frozen=True)
class Trial:
    kept: list[str]
    passed: bool
    agreement: float
    miou_drop_points: float | None
    failures: list[str] = field(default_factory=list)


@dataclass
class FallbackResult:
    cap: int
    trials: list[Trial]
    ranking: list[str] = field(default_factory=list)  # empty when the all-INT8 candidate passed

    @property
    def passed(self) -> bool:
        return bool(self.trials) and self.trials[-1].passed

    @property
    def kept(self) -> list[str]:
        """The layers in float in the final candidate (empty when nothing passed: INT8 as calibrated)."""
        return list(self.trials[-1].kept) if self.passed else []

    @property
    def next_layers(self) -> list[str]:
        """When the cap was hit: the layers the search would have tried next."""
        return [] if self.passed else self.ranking[self.cap:self.cap + SHOWN_NEXT]

    def to_dict(self) -> dict[str, Any]:
        return {"mode": "auto", "cap": self.cap, "passed": self.passed, "kept": self.kept,
                "next_layers": self.next_layers, "trials": [asdict(t) for t in self.trials],
                "ranking": self.ranking}


def check_fallback(mode: str, cap: int) -> None:
    if mode not in FALLBACK_MODES:
        raise UsageError("unknown --fallback", expected=" | ".join(FALLBACK_MODES), found=repr(mode))
    if cap < 1:
        raise UsageError("--fallback-cap must be at least 1 layer", found=str(cap))


def greedy_fallback(evaluate: Callable[[Sequence[str]], Trial], ranking: Callable[[], Sequence[str]], *,
                    cap: int = DEFAULT_CAP, log: Callable[[str], None] = lambda _: None) -> FallbackResult:
    """Trials with 0, 1, 2, ... of the ranked layers in float; stops at the first that passes or at ``cap``."""
    first = evaluate([])
    if first.passed:
        log("fallback: the all-INT8 candidate passes the gates; no layer kept in float")
        return FallbackResult(cap, [first])
    ranked = list(ranking())
    result = FallbackResult(cap, [first], ranked)
    for count in range(1, min(cap, len(ranked)) + 1):
        trial = evaluate(ranked[:count])
        result.trials.append(trial)
        drop = "-" if trial.miou_drop_points is None else f"{trial.miou_drop_points:.2f}"
        log(f"fallback: {count} layer(s) in float (+ {ranked[count - 1]}): agreement "
            f"{trial.agreement * 100:.2f} %, mIoU drop {drop} points -> {'pass' if trial.passed else 'fail'}")
        if trial.passed:
            break
    return result
