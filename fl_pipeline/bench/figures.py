"""A figure of `fedkb bench`: a measured value with its unit and how it was measured.

Every number in the report is recorded here by the code that measured it,
never typed in. A timing is the median of repeated runs, kept with its min
and max; a comparison is a ratio of two figures measured in the same run;
a budget from the issues sits next to the figure it applies to and says
whether the figure meets it.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


@dataclass(frozen=True)
class Budget:
    """A goal a figure should meet, e.g. `Budget("<=", 5, "issue 5")`."""

    op: str
    limit: float
    source: str  # which issue set it, and anything the reader needs to know

    def met(self, value: float) -> bool:
        return bool(_OPS[self.op](value, self.limit))


@dataclass
class Figure:
    label: str  # what the report calls it
    value: float
    unit: str  # s, ms, bytes, MB, fraction, ratio, %, epsilon, clients/s, ...
    how: str  # the command or function measured, and on what
    repetitions: int = 1
    min: float | None = None
    max: float | None = None
    sizes: dict = field(default_factory=dict)  # the sizes the value depends on
    budget: Budget | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        data["budget"] = None if self.budget is None else {
            **asdict(self.budget), "met": self.budget.met(self.value)}
        return data


class Figures:
    """The figures of one bench run by name (`section.name`), plus plot series and notes."""

    def __init__(self):
        self.figures: dict[str, Figure] = {}
        self.series: dict[str, dict] = {}
        self.notes: list[str] = []
        self.tables: dict[str, list[dict]] = {}  # rows that name their figures' values

    def add(self, name: str, label: str, value: float, unit: str, how: str, **details) -> Figure:
        if name in self.figures:
            raise ValueError(f"figure {name} recorded twice")
        figure = Figure(label, float(value), unit, how, **details)
        self.figures[name] = figure
        return figure

    def timing(self, name: str, label: str, samples: Sequence[float], unit: str, how: str,
               **details) -> Figure:
        """The median of `samples` (one per repetition), with their min and max."""
        if not samples:
            raise ValueError(f"no samples for {name}")
        return self.add(name, label, float(np.median(samples)), unit, how,
                        repetitions=len(samples), min=float(np.min(samples)),
                        max=float(np.max(samples)), **details)

    def percentile(self, name: str, label: str, samples: Sequence[float], q: float, unit: str,
                   how: str, **details) -> Figure:
        """The q-th percentile of `samples` (e.g. per-call latencies), with their min and max."""
        return self.add(name, label, float(np.percentile(samples, q)), unit, how,
                        repetitions=len(samples), min=float(np.min(samples)),
                        max=float(np.max(samples)), **details)

    def ratio(self, name: str, label: str, numerator: str, denominator: str, **details) -> Figure:
        """figure `numerator` / figure `denominator` (both measured in this run)."""
        top, bottom = self.figures[numerator], self.figures[denominator]
        how = f"{numerator} / {denominator}, both measured in this run"
        return self.add(name, label, top.value / bottom.value, "ratio", how, **details)

    def add_series(self, name: str, x: Sequence[float], y: Sequence[float], x_label: str,
                   y_label: str) -> None:
        self.series[name] = {"x": [float(v) for v in x], "y": [float(v) for v in y],
                             "x_label": x_label, "y_label": y_label}

    def note(self, text: str) -> None:
        """Something the reader must know: a measurement skipped or limited, and why."""
        self.notes.append(text)

    def to_json(self) -> dict:
        return {"figures": {name: f.to_json() for name, f in self.figures.items()},
                "series": self.series, "notes": self.notes, "tables": self.tables}


def repeat(fn: Callable[[], object], repetitions: int) -> list[float]:
    """Wall-clock seconds of `repetitions` calls of `fn`."""
    seconds = []
    for _ in range(repetitions):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return seconds


def finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
