"""``--plot``: a line chart per bucket with the ±2σ band, as PNG, SVG or PDF (from the file
name). Needs the ``plot`` extra."""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..corrections import RELATIVE_STANDARD_ERROR, Estimate
from ..keys import Bucket
from .reporting import SIGMAS, bucket_label

#: Per bucket, its points: (day, count, standard error).
Series = dict[Bucket, list[tuple[datetime.date, float, float]]]


#: The chart formats, by file name suffix (matplotlib writes them all without extra packages).
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


def plot_format(path: str | Path) -> str:
    """The format a chart file's name asks for; a ValueError naming the choices otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"--plot: cannot tell the format of {str(path)!r}: name it .png, .svg or .pdf"
        )
    return FORMATS[suffix]


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'activity-tracker[plot]'"
        ) from exc
    return Figure


_COUNTS_NOTE = (
    f"bands: ±{SIGMAS}σ, σ = 1.04/√16384 ≈ {RELATIVE_STANDARD_ERROR:.2%} of what each "
    "count's sketch holds"
)


def plot_counts(
    path: str | Path,
    series: Series,
    *,
    title: str,
    exact: Series | None = None,
    ylabel: str = "distinct ids",
    note: str = _COUNTS_NOTE,
) -> None:
    """Save a chart of ``series`` (one line per bucket, with the band of ±2 standard errors
    of each point) to ``path``; ``exact`` adds the exact counts as crosses."""
    figure_class = _figure_class()
    figure = figure_class(figsize=(10, 5.5), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for bucket, points in series.items():
        if not points:
            continue
        days = [day for day, _, _ in points]
        counts = [count for _, count, _ in points]
        band = [SIGMAS * stderr for _, _, stderr in points]
        (line,) = axes.plot(days, counts, marker=".", label=bucket_label(bucket))
        axes.fill_between(
            days,
            [c - b for c, b in zip(counts, band, strict=True)],
            [c + b for c, b in zip(counts, band, strict=True)],
            color=line.get_color(),
            alpha=0.2,
            linewidth=0,
        )
        if exact and exact.get(bucket):
            exact_points = exact[bucket]
            axes.plot(
                [day for day, _, _ in exact_points],
                [count for _, count, _ in exact_points],
                linestyle="none",
                marker="x",
                color=line.get_color(),
                label=f"{bucket_label(bucket)} (exact)",
            )
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    axes.annotate(
        note,
        xy=(0.01, 0.01),
        xycoords="axes fraction",
        fontsize="small",
        alpha=0.7,
    )
    figure.autofmt_xdate()
    figure.savefig(path, format=plot_format(path))


def series_from_rows(rows: Sequence[tuple[datetime.date, dict[Bucket, Estimate]]]) -> Series:
    """The series of ``lookup(..., with_error=True)`` rows."""
    series: Series = {}
    for start, estimates in rows:
        for bucket, estimate in estimates.items():
            series.setdefault(bucket, []).append((start, float(estimate.count), estimate.stderr))
    return series


def plot_retention(
    path: str | Path,
    rows: Sequence[tuple[datetime.date, Sequence[Estimate]]],
    *,
    title: str,
) -> None:
    """Save a retention triangle (``retention(..., with_error=True)``'s rows) as a heatmap:
    cohorts down, periods later across, each cell the share of its cohort active again, with
    its ±2σ in percentage points (written in the cells up to 16 cohorts)."""
    figure_class = _figure_class()
    size = len(rows)
    shares = [[math.nan] * size for _ in rows]
    for i, (_, row) in enumerate(rows):
        for j, found in enumerate(row):
            if row[0].count > 0:
                shares[i][j] = 100 * found.count / row[0].count
    figure = figure_class(figsize=(2 + 0.9 * max(size, 4), 1.5 + 0.5 * max(size, 4)), dpi=100)
    figure.set_layout_engine("constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    colorbar = figure.colorbar(image, ax=axes)
    colorbar.set_label("active again, % of the cohort")
    if size <= 16:
        for i, (_, row) in enumerate(rows):
            for j, found in enumerate(row):
                if row[0].count <= 0:
                    continue
                bound = 100 * SIGMAS * found.stderr / row[0].count
                text = f"{shares[i][j]:.0f}%\n±{bound:.0f}" if j else f"{found.count:,}"
                color = "black" if shares[i][j] > 60 else "white"
                axes.text(j, i, text, ha="center", va="center", fontsize="small", color=color)
    axes.set_xticks(range(size), ["size"] + [f"+{j}" for j in range(1, size)])
    axes.set_yticks(range(size), [start.isoformat() for start, _ in rows])
    axes.set_xlabel(
        f"periods later\n(±{SIGMAS}σ of |A| + |B| - |A ∪ B|, σ ≈ {RELATIVE_STANDARD_ERROR:.2%} "
        "of the union, in points of the cohort)"
    )
    axes.set_ylabel("cohort")
    axes.set_title(title)
    figure.savefig(path, format=plot_format(path))
