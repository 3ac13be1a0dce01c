"""Pictures and tables of runs: a child's loss curves, a sweep's overlay and its summary table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# Figures are made with matplotlib's object API, not pyplot: no backend is chosen for the user (a notebook
# keeps its inline plots), no window opens, and a figure is freed when it is no longer referenced.

CURVES = ("train_loss", "w_error", "b_error")


def plottable(value: float) -> bool:
    """Whether a log axis can show the value: not 0, negative, NaN or inf (MLflow stores inf as ~1.8e308)."""
    return 0 < value < 1e300


def _positive(values: Sequence[float]) -> list[float]:
    """The values, with those a log axis cannot show left out (NaN)."""
    return [v if plottable(v) else float("nan") for v in values]


def _log_y(ax: Axes, values: Sequence[float]) -> None:
    """A log y-axis where there is something to show on it."""
    if any(plottable(y) for y in values):
        ax.set_yscale("log")


def _margins(fig: Figure, title_lines: int = 1) -> None:
    """Fixed margins that fit the axis labels and a title of ``title_lines`` lines: ``tight_layout`` measures
    them by drawing the figure once more, which took about as long as saving it."""
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.92 if title_lines == 1 else 0.86)


def loss_curves(history: Mapping[str, Sequence[tuple[int, float]]], title: str) -> Figure:
    """train_loss, w_error and b_error against epoch on a log scale: one run."""
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    for key in CURVES:
        points = history.get(key, [])
        ax.plot([s for s, _ in points], _positive([v for _, v in points]), marker="o", label=key)
    ax.set(xlabel="epoch", ylabel="value (log scale)", title=title)
    _log_y(ax, [v for key in CURVES for _, v in history.get(key, [])])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    _margins(fig)
    return fig


def sweep_overlay(curves: Mapping[str, Sequence[tuple[int, float]]], title: str) -> Figure:
    """Every child's train_loss against epoch, labelled by run name: one sweep."""
    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    for name, points in curves.items():
        ax.plot([s for s, _ in points], _positive([v for _, v in points]), marker="o", label=name)
    ax.set(xlabel="epoch", ylabel="train_loss (log scale)", title=title)
    _log_y(ax, [v for points in curves.values() for _, v in points])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    _margins(fig)
    return fig


def group_overlay(bands: Mapping[str, Mapping[int, Mapping[str, float]]], title: str) -> Figure:
    """Each group's mean train_loss against epoch, with its 95% interval over the seeds as a shaded band."""
    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    values: list[float] = []
    for name, by_step in bands.items():
        steps = sorted(by_step)
        mean = _positive([by_step[s]["mean"] for s in steps])
        line = ax.plot(steps, mean, marker="o", label=name)[0]
        low = [by_step[s]["low"] for s in steps]
        high = [by_step[s]["high"] for s in steps]
        if all(math.isfinite(v) for v in low + high):  # one seed has no interval
            floor = min([v for v in mean if plottable(v)] or [1.0]) * 1e-3  # a band reaching 0 stops on a log axis
            ax.fill_between(steps, [max(v, floor) for v in low], high, color=line.get_color(), alpha=0.2)
        values += [by_step[s]["mean"] for s in steps]
    ax.set(xlabel="epoch", ylabel="train_loss (log scale)", title=f"{title}\nmean over seeds, band: 95% t interval")
    _log_y(ax, values)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    _margins(fig, title_lines=2)
    return fig


def versus_bands(
    xs: Sequence[float],
    ys: Mapping[str, Sequence[Any]],
    xlabel: str,
    title: str,
    vlines: Mapping[str, float] | None = None,
) -> Figure:
    """Group means of final metrics against a swept key, log-log, with their 95% intervals as error bars.

    ``ys`` maps a label to one ``lrlab.core.replicates.Spread`` per x."""
    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    values: list[float] = []
    for label, spreads in ys.items():
        mean = [s.mean for s in spreads]
        below = [s.mean - s.low if math.isfinite(s.low) else 0.0 for s in spreads]
        above = [s.high - s.mean if math.isfinite(s.high) else 0.0 for s in spreads]
        below = [min(b, 0.999 * m) for b, m in zip(below, mean, strict=True)]  # stays above 0 on a log axis
        ax.errorbar(xs, _positive(mean), yerr=[below, above], marker="o", capsize=3, label=label)
        values += mean
    for label, x in (vlines or {}).items():
        ax.axvline(x, linestyle=":", color="red", label=f"{label} = {x:.3g}")
    ax.set(xlabel=f"{xlabel} (log scale)", ylabel="final value (log scale)", xscale="log", title=title)
    _log_y(ax, values)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    _margins(fig)
    return fig


def summary_table(rows: Sequence[Mapping[str, object]]) -> pd.DataFrame:
    """One row per child run: what varied, final metrics, status."""
    return pd.DataFrame(list(rows))


def versus(
    xs: Sequence[float],
    ys: Mapping[str, Sequence[float]],
    xlabel: str,
    title: str,
    hlines: Mapping[str, float] | None = None,
    vlines: Mapping[str, float] | None = None,
) -> Figure:
    """Final metrics against a swept numeric key, log-log, with theory drawn as reference lines."""
    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    for label, values in ys.items():
        ax.plot(xs, _positive(values), marker="o", label=label)
    for label, y in (hlines or {}).items():
        ax.axhline(y, linestyle="--", color="gray", label=f"{label} = {y:.3g}")
    for label, x in (vlines or {}).items():
        ax.axvline(x, linestyle=":", color="red", label=f"{label} = {x:.3g}")
    ax.set(xlabel=f"{xlabel} (log scale)", ylabel="final value (log scale)", xscale="log", title=title)
    _log_y(ax, [v for values in ys.values() for v in values])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    _margins(fig)
    return fig
