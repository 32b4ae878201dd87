"""Shared statistics for the metric modules: the seeded percentile bootstrap and the `V` shape.

Every metric in the report is `{"value", "ci_low", "ci_high", "n"}` (docs/report-schema.md).
The CI is a percentile bootstrap over items (Efron & Tibshirani 1993, ch. 13): draw
`n` items with replacement `n_resamples` times, recompute the statistic, take the
2.5% and 97.5% percentiles.

A resample is represented by its **count vector** `c` (how often each item was
drawn), so a statistic is a function of a `(b, n)` count matrix. That makes means,
ratios of sums and corpus-level unique counts one matrix product each instead of a
Python loop over resamples, and keeps memory bounded by drawing `chunk` resamples
at a time (10,000 prompts x 1,000 resamples never sit in memory at once).

Deviation from the textbook: none in the method; we return a null CI when n < 2
(a bootstrap of one item is the item itself and says nothing about uncertainty).

With several responses per prompt (`eval.samples_per_prompt`) the item is the
**prompt**, not the response: responses to one prompt are correlated (they share
its difficulty), so resampling responses would understate the uncertainty. This is
the cluster bootstrap (Davison & Hinkley 1997, sec. 3.8; Field & Welsh 2007): a
statistic of per-prompt values (`group_means`) is bootstrapped as usual, and a
statistic of the responses themselves gives every response its prompt's count
(`cluster_counts`).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Callable

import numpy as np

CountStatistic = Callable[[np.ndarray], np.ndarray]  # (b, n) float counts -> (b,) statistic


def metric_value(value: float, ci: tuple[float | None, float | None], n: int) -> dict:
    """The report's `V`: plain Python floats (JSON-safe), CI bounds may be None."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"metric value {value} is not finite")
    lo, hi = ci
    return {"value": value, "ci_low": None if lo is None else float(lo),
            "ci_high": None if hi is None else float(hi), "n": int(n)}


def resample_counts(n: int, n_resamples: int, seed: int, chunk: int = 256):
    """Yields (b, n) float64 count matrices, b <= chunk, n_resamples rows in all.

    Row r counts how many times each of the n items was drawn in resample r
    (each row sums to n). Deterministic for a given (n, n_resamples, seed, chunk).
    """
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_resamples:
        b = min(chunk, n_resamples - done)
        idx = rng.integers(0, n, size=(b, n))  # (b, n) drawn item indices
        flat = (idx + (np.arange(b) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def bootstrap_ci(statistic: CountStatistic, n: int, n_resamples: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of `statistic` over n items; (None, None) when n < 2 or n_resamples == 0."""
    if n < 2 or n_resamples <= 0:
        return None, None
    stats = np.concatenate([statistic(c) for c in resample_counts(n, n_resamples, seed)])  # (n_resamples,)
    stats = stats[np.isfinite(stats)]  # a resample where the statistic is undefined (e.g. zero variance)
    if stats.size == 0:
        return None, None
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.percentile(stats, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------- clusters (prompts)


def group_means(values, groups) -> np.ndarray:
    """(N,) per-response values, (N,) group (prompt) index of each -> (G,) the mean of each group, G = max + 1.

    Every group 0..G-1 must have at least one value. A group of one value returns that value
    exactly (x + 0.0, then / 1.0), so one response per prompt gives back the responses' values."""
    x = np.asarray(values, dtype=np.float64)
    g = np.asarray(groups, dtype=np.int64)
    if x.shape != g.shape or x.ndim != 1:
        raise ValueError(f"group_means: {x.shape[0] if x.ndim else 0} values but {g.size} group indices")
    if g.size == 0:
        return np.zeros(0)
    if g.min() < 0:
        raise ValueError("group_means: negative group index")
    sizes = np.bincount(g)
    if (sizes == 0).any():
        raise ValueError(f"group_means: group(s) {np.flatnonzero(sizes == 0).tolist()} have no values")
    return np.bincount(g, weights=x, minlength=sizes.size) / sizes


def cluster_counts(groups) -> Callable[[np.ndarray], np.ndarray]:
    """Resample counts over G groups (b, G) -> counts over their N members (b, N): each member gets its
    group's count, so a statistic of the members is bootstrapped by resampling whole groups."""
    g = np.asarray(groups, dtype=np.int64)
    return lambda c: c[:, g]


# ----------------------------------------------------------------------------- count statistics


def mean_statistic(x: np.ndarray) -> CountStatistic:
    """Mean of per-item values x (n,) under resample counts c (b, n): c @ x / n."""
    x = np.asarray(x, dtype=np.float64)
    return lambda c: c @ x / c.sum(1)


def ratio_statistic(num: np.ndarray, den: np.ndarray) -> CountStatistic:
    """sum(num) / sum(den) under counts (e.g. total NLL / total tokens); 0 where the denominator is 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)

    def stat(c: np.ndarray) -> np.ndarray:
        d = c @ den
        return np.divide(c @ num, d, out=np.zeros_like(d), where=d > 0)

    return stat


def unique_ratio_loo(item_ids: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """(unique ids / total ids over all items, (n,) the same ratio leaving each item out).

    The leave-one-out values are exact and O(total ids): item i's removal loses the
    ids that occur in no other item and the len(ids_i) occurrences it held.
    """
    n = len(item_ids)
    lengths = np.array([len(a) for a in item_ids], dtype=np.float64)  # (n,)
    total = lengths.sum()
    uniq = [np.unique(a) for a in item_ids]
    all_ids = np.concatenate(uniq) if n else np.zeros(0, np.int64)
    ids, items_per_id = np.unique(all_ids, return_counts=True)  # in how many items each id occurs
    n_unique = float(ids.size)
    only_here = np.array([np.isin(u, ids[items_per_id == 1]).sum() for u in uniq], dtype=np.float64)  # (n,)
    loo_total = total - lengths
    loo = np.divide(n_unique - only_here, loo_total, out=np.zeros(n), where=loo_total > 0)
    return (n_unique / total if total else 0.0), loo


def jackknife_ci(value: float, loo: np.ndarray, confidence: float = 0.95,
                 bounds: tuple[float, float] = (-np.inf, np.inf)) -> tuple[float | None, float | None]:
    """Normal CI value +- z * jackknife SE (Efron & Tibshirani 1993, ch. 11); None when n < 2.

    Used for corpus-level unique counts (distinct-n), where the bootstrap is biased:
    drawing with replacement duplicates responses, which reads as repetition and
    pushes every resample below the full-sample value.
    """
    n = len(loo)
    if n < 2:
        return None, None
    se = float(np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return float(np.clip(value - z * se, *bounds)), float(np.clip(value + z * se, *bounds))
