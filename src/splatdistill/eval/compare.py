"""Statistics of a multi-seed comparison (``splatdistill demo --compare``): mean and spread per method and
metric, and paired per-seed differences against a reference method.

Pure functions over plain numbers, so the report's statistics can be checked by hand. A method trained
with N seeds has N values per metric; a method without training (the original backbone) has one value,
repeated for every seed when it is the reference of a paired difference. "Spread" is the sample
standard deviation (n - 1; 0 for a single value) and the min..max range: with three seeds both are
shown, since a standard deviation from three values is itself uncertain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from splatdistill.eval import report


@dataclass(frozen=True)
class Metric:
    """One column of the comparison: where to read it, how to scale it and which direction is better."""

    key: str
    label: str
    scale: float = 1.0
    lower_is_better: bool = False
    fmt: str = "{:.2f}"


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation and range of a metric's values over seeds."""

    mean: float
    std: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        vals = [float(v) for v in values]
        if not vals:
            raise ValueError("no values")
        n = len(vals)
        mean = math.fsum(vals) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
        return cls(mean, std, min(vals), max(vals), n)


#: method -> seed -> metric key -> value (None: not measured, e.g. a dataset that was not available)
Results = Mapping[str, Mapping[int, Mapping[str, "float | None"]]]


def _values(results: Results, method: str, key: str) -> dict[int, float]:
    return {seed: float(row[key]) for seed, row in results[method].items() if row.get(key) is not None}


def summarize(results: Results, metrics: Sequence[Metric]) -> dict[str, dict[str, Stat | None]]:
    """method -> metric key -> :class:`Stat` of its scaled values over seeds (None when never measured)."""
    out: dict[str, dict[str, Stat | None]] = {}
    for method in results:
        out[method] = {}
        for m in metrics:
            vals = _values(results, method, m.key)
            out[method][m.key] = Stat.of([v * m.scale for v in vals.values()]) if vals else None
    return out


@dataclass(frozen=True)
class Paired:
    """Per-seed differences method - reference (scaled), their statistics and how many favour the method."""

    diffs: tuple[float, ...]
    stat: Stat
    better: int  # seeds on which the method is better than the reference (direction of the metric)


def paired(results: Results, method: str, reference: str, metric: Metric) -> Paired | None:
    """Differences ``method - reference`` seed by seed. A reference measured once (no training: the
    original backbone) is compared with every seed of the method; otherwise only seeds both have count."""
    a, b = _values(results, method, metric.key), _values(results, reference, metric.key)
    if not a or not b:
        return None
    if len(b) == 1:
        ref = next(iter(b.values()))
        pairs = [(a[s], ref) for s in sorted(a)]
    else:
        pairs = [(a[s], b[s]) for s in sorted(a) if s in b]
    if not pairs:
        return None
    diffs = tuple((x - y) * metric.scale for x, y in pairs)
    sign = -1.0 if metric.lower_is_better else 1.0
    return Paired(diffs, Stat.of(diffs), sum(1 for d in diffs if sign * d > 0))


def _fmt_stat(s: Stat | None, fmt: str, signed: bool = False) -> str:
    if s is None:
        return "n/a"
    f = fmt.replace("{:", "{:+") if signed else fmt
    if s.n == 1:
        return f.format(s.mean)
    return f"{f.format(s.mean)} ± {fmt.format(s.std)} [{f.format(s.low)}, {f.format(s.high)}]"


def results_table(results: Results, metrics: Sequence[Metric], labels: Mapping[str, str] | None = None) -> str:
    """The paper's layout: one row per method, one column per metric, "mean ± std [min, max]" over seeds."""
    stats = summarize(results, metrics)
    labels = labels or {}
    rows = [{m.key: _fmt_stat(stats[method][m.key], m.fmt) for m in metrics} for method in results]
    columns = [(m.key, f"{m.label} {'↓' if m.lower_is_better else '↑'}", "{}") for m in metrics]
    return report.markdown_table([labels.get(k, k) for k in results], rows, columns, higher={}, first="method")


def paired_table(
    results: Results,
    metrics: Sequence[Metric],
    reference: str,
    methods: Sequence[str],
    labels: Mapping[str, str] | None = None,
) -> str:
    """Rows ``method - reference``: mean ± std of the per-seed differences and "k/n" seeds better."""
    labels = labels or {}
    rows, names = [], []
    for method in methods:
        if method == reference:
            continue
        row = {}
        for m in metrics:
            p = paired(results, method, reference, m)
            row[m.key] = "n/a" if p is None else f"{_fmt_stat(p.stat, m.fmt, signed=True)} ({p.better}/{p.stat.n})"
        rows.append(row)
        names.append(f"{labels.get(method, method)} − {labels.get(reference, reference)}")
    columns = [(m.key, f"{m.label} {'↓' if m.lower_is_better else '↑'}", "{}") for m in metrics]
    return report.markdown_table(names, rows, columns, higher={}, first="paired difference")
