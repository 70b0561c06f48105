"""What the benchmark sections print: summary rows and the few words that describe a run."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.harness import Measurement


@dataclass(frozen=True)
class Row:
    """One line of the final summary."""

    measure: str
    tap: str
    baseline: str
    ratio: str = ""
    goal: str = ""
    met: str = ""


def heading(title: str) -> None:
    """A section title."""
    print(f"\n== {title}")


def brief(measurement: Measurement) -> str:
    """One run in a few words."""
    run = measurement.run
    return (
        f"{run.wall_seconds:.2f} s (CPU {run.cpu_seconds:.2f} s, {run.peak_rss_mb:.0f} MB, "
        f"{measurement.requests:,} req, {measurement.records:,} rec)"
    )


def median_of(side: list[Measurement], figure: str) -> float:
    """The median of one ChildRun figure over runs (the mean of the middle two if even)."""
    return statistics.median(getattr(measurement.run, figure) for measurement in side)


def spread(values: list[float]) -> str:
    """Every run, to show the noise."""
    return "(" + ", ".join(f"{value:.2f}" for value in values) + ")"


def yes_no(condition: bool) -> str:  # noqa: FBT001
    """`yes` or `no`."""
    return "yes" if condition else "no"
