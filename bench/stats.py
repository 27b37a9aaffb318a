"""Medians, quartiles and ratios for figures measured on a busy machine.

Every figure is a set of samples, never one run: its median says where it
sits, its interquartile range (IQR, the middle half of the samples) how much
the machine disturbed it. Two things run interleaved (A, B, A, B ...) are
compared by the median of their paired ratios A_i / B_i, so a burst of load
from a neighbour hits both sides of a pair instead of one whole series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    q1: float
    q3: float
    low: float
    high: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


def _checked(samples: Sequence[float]) -> list[float]:
    values = sorted(float(x) for x in samples)
    if not values:
        raise ValueError("no samples")
    if any(x != x for x in values):  # NaN sorts nowhere: refuse it outright
        raise ValueError("a sample is NaN")
    return values


def _quantile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks of sorted `values`
    (the "inclusive" definition: the 0- and 1-quantiles are the extremes)."""
    pos = (len(values) - 1) * q
    below = int(pos)
    above = min(below + 1, len(values) - 1)
    return values[below] + (values[above] - values[below]) * (pos - below)


def median(samples: Sequence[float]) -> float:
    return _quantile(_checked(samples), 0.5)


def quartiles(samples: Sequence[float]) -> tuple[float, float]:
    """(first quartile, third quartile)."""
    values = _checked(samples)
    return _quantile(values, 0.25), _quantile(values, 0.75)


def summarize(samples: Sequence[float]) -> Summary:
    values = _checked(samples)
    return Summary(n=len(values), median=_quantile(values, 0.5), q1=_quantile(values, 0.25),
                   q3=_quantile(values, 0.75), low=values[0], high=values[-1])


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; a zero or negative denominator is a
    measurement that went wrong, not a ratio."""
    if denominator <= 0:
        raise ValueError("ratio against a non-positive value (%r)" % denominator)
    return numerator / denominator


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """A_i / B_i for samples taken in pairs (interleaved runs)."""
    if len(a) != len(b):
        raise ValueError("paired samples differ in number (%d vs %d)" % (len(a), len(b)))
    if not a:
        raise ValueError("no samples")
    return [ratio(x, y) for x, y in zip(a, b)]


def ratio_summary(a: Sequence[float], b: Sequence[float]) -> Summary:
    """The spread of A/B over interleaved pairs."""
    return summarize(paired_ratios(a, b))


def fmt_value(summary: Summary, unit: str = "", scale: float = 1.0, digits: int = 2) -> str:
    """`31.20 ms (IQR 30.80-31.90, n=50)`; scale converts the samples' unit
    to the displayed one (e.g. 1e-6 for ns -> ms)."""
    sep = " " if unit else ""
    if summary.n == 1:
        return "%.*f%s%s (n=1)" % (digits, summary.median * scale, sep, unit)
    return "%.*f%s%s (IQR %.*f-%.*f, n=%d)" % (
        digits, summary.median * scale, sep, unit, digits, summary.q1 * scale,
        digits, summary.q3 * scale, summary.n)


def fmt_ratio(summary: Summary, digits: int = 2) -> str:
    """`4.21x (IQR 4.10-4.35)`."""
    if summary.n == 1:
        return "%.*fx" % (digits, summary.median)
    return "%.*fx (IQR %.*f-%.*f)" % (digits, summary.median, digits, summary.q1,
                                     digits, summary.q3)
