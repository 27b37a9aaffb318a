"""What a figure module hands to the report: plain data only.

A `Section` is one figure: what it measured and how (`method`), its tables,
the plots to draw (as data: report.py draws them), notes (targets met or
missed, things not measured and why) and the raw numbers for the JSON file.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Series:
    label: str
    xs: list[float] = field(default_factory=list)  # unused by box plots
    ys: list[float] = field(default_factory=list)


@dataclass
class Plot:
    """kind: "box" (ys = samples per series), "line" (xs, ys per series),
    "bar" (one series per group member; xs = group index, tick labels in
    `categories`), "stack" (one horizontal bar; each series one segment,
    ys = [value])."""
    name: str  # file stem under img/
    kind: str
    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    categories: list[str] = field(default_factory=list)
    log_y: bool = False


@dataclass
class Section:
    key: str
    title: str
    method: str
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    seconds: float = 0.0  # how long the figure took to measure
    load: float = 0.0  # 1-minute load average when it was done: how busy the machine was
