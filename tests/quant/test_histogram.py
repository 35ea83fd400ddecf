from __future__ import annotations

import math

import numpy as np
import pytest

from edgeseg.quant.histogram import BINS, MAX_BINS, AbsHistogram, entropy_amax, kl_divergences, percentile_amax


def naive_kl(counts: np.ndarray, i: int, levels: int = 128) -> float:
    """The definition, one threshold at a time (TensorRT's entropy calibration, as published)."""
    h = counts.astype(np.float64)
    p = h[:i].copy()
    p[i - 1] += h[i:].sum()
    chunk = i // levels
    q = np.zeros(i)
    for j in range(levels):
        start = j * chunk
        stop = i if j == levels - 1 else start + chunk
        part = h[start:stop]
        filled = np.count_nonzero(part)
        if filled:
            q[start:stop] = np.where(part > 0, part.sum() / filled, 0.0)
    p, q = p / p.sum(), q / q.sum()
    mask = p > 0
    if np.any(q[mask] == 0):
        return math.inf
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_kl_matches_the_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(300, 700))
    counts = np.round(rng.exponential(50, n) * np.exp(-np.arange(n) / 80)).astype(np.int64)
    counts[rng.integers(0, n, 20)] = 0  # empty bins inside the range
    fast = kl_divergences(counts)
    for i in range(128, n + 1, 7):
        expected = naive_kl(counts, i)
        if math.isinf(expected):
            assert math.isinf(fast[i - 128])
        else:
            assert fast[i - 128] == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_entropy_clips_a_long_tail_and_keeps_a_compact_distribution() -> None:
    rng = np.random.default_rng(0)
    histogram = AbsHistogram()
    tailed = rng.standard_normal(200_000).astype(np.float32)
    tailed[:20] = 12.0  # a few outliers (a threshold can go down to max/16: 2048 bins, 128 levels)
    histogram.add(tailed)
    amax = entropy_amax(histogram)
    assert 3.0 < amax < 8.0  # the outliers are clipped, the bulk is not
    uniform = AbsHistogram()
    uniform.add(rng.uniform(-1, 1, 200_000).astype(np.float32))
    assert entropy_amax(uniform) == pytest.approx(1.0, abs=0.02)  # nothing to clip


def test_histogram_grows_with_later_batches_without_losing_counts() -> None:
    histogram = AbsHistogram()
    histogram.add(np.full(10, 0.5, np.float32))
    histogram.add(np.array([0.0, -3.0, 2.0], np.float32))
    assert histogram.counts.sum() + histogram.zeros == 13 and histogram.min == -3.0 and histogram.max == 2.0
    histogram.add(np.array([0.5 * MAX_BINS], np.float32))  # far past the cap: bins merge in pairs
    assert len(histogram.counts) <= MAX_BINS and histogram.counts.sum() + histogram.zeros == 14
    assert percentile_amax(histogram, 50.0) <= 1.0 and percentile_amax(histogram, 100.0) == 0.5 * MAX_BINS


def test_exact_zeros_count_for_percentile_but_not_for_entropy() -> None:
    histogram = AbsHistogram()
    histogram.add(np.zeros(100, np.float32))
    assert histogram.width == 0.0 and entropy_amax(histogram) == 0.0
    histogram.add(np.linspace(0.01, 1, 100, dtype=np.float32))
    assert histogram.counts.sum() == 100 and histogram.zeros == 100
    assert histogram.width == pytest.approx(1.0 / BINS)
    assert percentile_amax(histogram, 50.0) < 0.01  # half of all values are 0
    assert entropy_amax(histogram) == pytest.approx(1.0, abs=0.01)  # the non-zero values are uniform


def test_a_post_relu_spike_at_zero_does_not_drag_the_entropy_threshold_down() -> None:
    rng = np.random.default_rng(0)
    values = np.maximum(rng.standard_normal(400_000), 0).astype(np.float32)  # half exact zeros
    histogram = AbsHistogram()
    histogram.add(values)
    assert entropy_amax(histogram) > 0.25 * histogram.amax  # with the zeros in bin 0: max/16


def test_non_finite_values_are_flagged() -> None:
    histogram = AbsHistogram()
    histogram.add(np.array([1.0, np.nan], np.float32))
    histogram.add(np.array([1.0, 2.0], np.float32))
    assert not histogram.finite
