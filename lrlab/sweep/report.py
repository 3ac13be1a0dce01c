"""Pictures and tables of runs: a child's loss curves, a sweep's overlay and its summary table.

How the figures read: a swept numeric key colours the curves along a sequential map (viridis, log-normed when
its values span more than a decade) with a colour bar; other sweeps get categorical colours. A run's outcome
(``lrlab.core.outcome``) sets its style: solid while bounded, dashed while growing, an × where it overflowed.
Legends sit right of the axes; titles wrap to the figure. Intervals of a loss or an error come from
``lrlab.core.replicates.log_spread``, on the log scale, so they stay positive.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, ListedColormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from lrlab.core.outcome import UNBOUNDED

# Figures are made with matplotlib's object API, not pyplot: no backend is chosen for the user (a notebook
# keeps its inline plots), no window opens, and a figure is freed when it is no longer referenced. Each figure
# gets its own Agg canvas, which measures the legend and the title so the layout fits them without drawing the
# whole figure (what tight_layout and constrained layout do, at about the cost of saving it).

CURVES = ("train_loss", "w_error", "b_error")
OVERFLOW, GROWING = UNBOUNDED  # the outcomes (lrlab.core.outcome) that are drawn apart
SEQUENTIAL = ListedColormap(
    colormaps["viridis"](  # viridis without its palest yellow, which vanishes on white
        [i / 255 * 0.9 for i in range(256)]
    )
)
MARKERS_UP_TO = 25  # points per curve up to which each point is marked

# The layout, in inches: the axes keep their size, the figure grows to the right for a colour bar and a legend.
AXES_WIDTH, AXES_HEIGHT = 5.4, 3.3
LEFT, BOTTOM, RIGHT_PAD = 0.9, 0.65, 0.12
GAP = 0.15  # between the axes, the colour bar and the legend
COLORBAR_WIDTH, COLORBAR_LABELS = 0.15, 0.75  # the bar, and its ticks and label beside it
TITLE_LINE, TITLE_PAD = 0.24, 0.22


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


def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=(LEFT + AXES_WIDTH + RIGHT_PAD, BOTTOM + AXES_HEIGHT + TITLE_PAD + TITLE_LINE), dpi=100)
    FigureCanvasAgg(fig)  # a renderer to measure text with; saving still goes through the figure
    return fig, fig.add_axes((0.1, 0.1, 0.8, 0.8))


_PIECE = re.compile(r"(?:\([^)]*\)|[^ ,(])+[ ,]?|[ ,(]")  # up to a space or a comma, never inside (...)


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters where it can: each of its own lines broken after a space
    or a comma (a sweep's name lists its values with commas and no spaces), never inside parentheses."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for piece in _PIECE.findall(paragraph):
            if line.strip() and len((line + piece).rstrip()) > width:
                lines.append(line.rstrip())
                line = ""
            line += piece
        lines.append(line.rstrip())
    return lines


def _width_in(artist: Any, fig: Figure) -> float:
    """An artist's width in inches, as it will be drawn."""
    return float(artist.get_window_extent(fig.canvas.get_renderer()).width) / fig.dpi  # type: ignore[attr-defined]


def _layout(
    fig: Figure,
    ax: Axes,
    title: str,
    legend_handles: Sequence[Any] = (),
    legend_title: str | None = None,
    mappable: ScalarMappable | None = None,
    mappable_label: str = "",
    ticks: Sequence[float] = (),
) -> Axes | None:
    """Place the axes, the colour bar of ``mappable`` (with minor ``ticks``: the swept values) and a legend of
    ``legend_handles`` to its right, and the title wrapped to the figure's width; size the figure to fit them.
    Returns the colour bar's axes."""
    colorbar_block = GAP + COLORBAR_WIDTH + COLORBAR_LABELS if mappable is not None else 0.0
    legend = None
    legend_block = 0.0
    if legend_handles:
        legend = ax.legend(
            handles=list(legend_handles),
            title=legend_title,
            fontsize="small",
            title_fontsize="small",
            loc="upper left",
            borderaxespad=0.0,
            frameon=False,
        )
        legend_block = GAP + _width_in(legend, fig)
    width = LEFT + AXES_WIDTH + colorbar_block + legend_block + RIGHT_PAD
    fits = 2 * min(LEFT + AXES_WIDTH / 2, width - LEFT - AXES_WIDTH / 2) - 0.2  # centred over the axes
    text = ax.set_title(title, fontsize="medium")
    for chars in range(int(fits * 72 / 6), 19, -3):  # the longest lines that fit
        lines = wrap(title, chars)
        text.set_text("\n".join(lines))
        if _width_in(text, fig) <= fits:
            break
    height = BOTTOM + AXES_HEIGHT + TITLE_PAD + TITLE_LINE * len(lines)
    fig.set_size_inches(width, height)
    ax.set_position((LEFT / width, BOTTOM / height, AXES_WIDTH / width, AXES_HEIGHT / height))
    cax = None
    if mappable is not None:
        left = LEFT + AXES_WIDTH + GAP
        cax = fig.add_axes((left / width, BOTTOM / height, COLORBAR_WIDTH / width, AXES_HEIGHT / height))
        bar = fig.colorbar(mappable, cax=cax, label=mappable_label)
        if ticks:
            bar.set_ticks(sorted(set(ticks)), minor=True)
            cax.tick_params(which="minor", length=5, width=1, color="black")
    if legend is not None:
        legend.set_bbox_to_anchor((1 + (colorbar_block + GAP) / AXES_WIDTH, 1.0), transform=ax.transAxes)
    return cax


def colours(
    names: Sequence[str], values: Mapping[str, float] | None = None
) -> tuple[dict[str, Any], ScalarMappable | None]:
    """A colour per name: by its numeric value along ``SEQUENTIAL`` when every name has a finite one (log-normed
    when positive values span more than a decade), with the ``ScalarMappable`` for a colour bar; else
    categorical colours and None."""
    numbers = [values.get(name, math.nan) for name in names] if values else []
    if numbers and len(names) > 1 and all(math.isfinite(v) for v in numbers):
        low, high = min(numbers), max(numbers)
        norm: Normalize = LogNorm(low, high) if low > 0 and high > 10 * low else Normalize(low, high)
        if low == high:  # one value (seeds apart): the middle of the map
            norm = Normalize(low - 1, high + 1)
        mappable = ScalarMappable(norm=norm, cmap=SEQUENTIAL)
        return {name: SEQUENTIAL(norm(v)) for name, v in zip(names, numbers, strict=True)}, mappable
    cmap: Colormap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}, None


def _outcome_handles(
    which: Mapping[str, Sequence[float]], of_seeds: bool = False, key: str = "", listed: bool = False
) -> list[Line2D]:
    """Legend entries for the line styles of the outcomes in ``which`` (outcome -> the swept values it came at),
    of a curve or of a seed of a group's curve; ``listed``: each entry lists its values (``key``=...)."""
    if not any(which.get(o) for o in (GROWING, OVERFLOW)):
        return []
    grey = "0.35"
    growing, overflow = ("a seed grew", "a seed overflowed (×)") if of_seeds else ("growing", "overflow (×)")

    def label(text: str, outcome: str) -> str:
        if not listed:
            return text
        shown = ", ".join(f"{v:g}" for v in sorted(which[outcome]))
        return "\n".join([f"{text}:", *wrap(f"{key}={shown}", 30)])

    handles = [Line2D([], [], color=grey, linestyle="-", label="bounded")]
    if which.get(GROWING):
        handles.append(Line2D([], [], color=grey, linestyle="--", label=label(growing, GROWING)))
    if which.get(OVERFLOW):
        cross = Line2D([], [], color=grey, linestyle="-", marker="X", markersize=8, mec="black")
        cross.set_label(label(overflow, OVERFLOW))
        handles.append(cross)
    return handles


def _draw(ax: Axes, steps: Sequence[int], ys: Sequence[float], colour: Any, outcome: str, label: str) -> Line2D:
    """One curve in the style of its outcome; an overflow ends with an × at its last point that the axis can
    show, or at the top of the axes above its last epoch where there is none."""
    marker = "o" if len(steps) <= MARKERS_UP_TO else None
    style = "--" if outcome == GROWING else "-"
    line = ax.plot(steps, _positive(ys), marker=marker, markersize=4, linestyle=style, color=colour, label=label)[0]
    if outcome == OVERFLOW and steps:
        shown = [(s, y) for s, y in zip(steps, ys, strict=True) if plottable(y)]
        end = dict(marker="X", markersize=11, color=colour, mec="black", mew=1, linestyle="none", zorder=5)
        if shown and shown[-1][0] == steps[-1]:
            ax.plot([shown[-1][0]], [shown[-1][1]], **end)
        else:  # it left the axis's range at its last epoch: mark that epoch at the top
            top = blended_transform_factory(ax.transData, ax.transAxes)
            ax.plot([steps[-1]], [0.97], transform=top, clip_on=False, **end)
    return line


def loss_curves(history: Mapping[str, Sequence[tuple[int, float]]], title: str) -> Figure:
    """train_loss, w_error and b_error against epoch on a log scale: one run."""
    fig, ax = _figure()
    for key in CURVES:
        points = history.get(key, [])
        ax.plot([s for s, _ in points], _positive([v for _, v in points]), marker="o", markersize=4, label=key)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
    ax.set(xlabel="epoch", ylabel="value (log scale)")
    _log_y(ax, [v for key in CURVES for _, v in history.get(key, [])])
    ax.grid(True, which="both", alpha=0.3)
    _layout(fig, ax, title, ax.get_legend_handles_labels()[0])
    return fig


def sweep_overlay(
    curves: Mapping[str, Sequence[tuple[int, float]]],
    title: str,
    outcomes: Mapping[str, str] | None = None,
    values: Mapping[str, float] | None = None,
    key: str = "",
) -> Figure:
    """Every child's train_loss against epoch: one sweep. ``outcomes`` (by run name) sets each curve's style;
    ``values`` (by run name: the one swept numeric ``key``) colours the curves along a colour bar, and the legend
    lists the values that grew or overflowed; otherwise each curve is named in the legend."""
    fig, ax = _figure()
    outcomes = outcomes or {}
    colour, mappable = colours(list(curves), values)
    drawn: list[float] = []
    for name, points in curves.items():
        steps, ys = [s for s, _ in points], [v for _, v in points]
        _draw(ax, steps, ys, colour[name], outcomes.get(name, ""), name)
        drawn += ys
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
    ax.set(xlabel="epoch", ylabel="train_loss (log scale)")
    _log_y(ax, drawn)
    ax.grid(True, which="both", alpha=0.3)
    if mappable is None:
        which = {o: [0.0] for o in set(outcomes.values())}
        _layout(fig, ax, title, ax.get_legend_handles_labels()[0] + _outcome_handles(which))
        return fig
    assert values is not None
    which = {o: [values[n] for n in curves if outcomes.get(n) == o] for o in (GROWING, OVERFLOW)}
    handles = _outcome_handles(which, key=key, listed=True)
    _layout(fig, ax, title, handles, "outcome", mappable, key, list(values.values()))
    return fig


def group_overlay(
    bands: Mapping[str, Mapping[int, Mapping[str, float]]],
    title: str,
    outcomes: Mapping[str, Mapping[str, int]] | None = None,
    values: Mapping[str, float] | None = None,
    key: str = "",
) -> Figure:
    """Each group's geometric mean train_loss against epoch, with its 95% interval over the seeds (on the log
    scale: ``log_spread``) as a shaded band. ``outcomes`` counts each group's seeds by outcome: a curve is dashed
    where a seed grew and ends with an × where one overflowed; the legend lists those groups (a group whose every
    seed overflowed has no curve, only its place in the legend)."""
    fig, ax = _figure()
    outcomes = outcomes or {}
    colour, mappable = colours(list(bands), values)
    drawn: list[float] = []
    edges: list[float] = []
    for name, by_step in bands.items():
        counts = outcomes.get(name, {})
        worst = OVERFLOW if counts.get(OVERFLOW) else GROWING if counts.get(GROWING) else ""
        label = name + _counted(counts)
        steps = sorted(by_step)
        if not steps:  # no finished seed: nothing to draw but its name
            ax.plot([], [], linestyle="none", marker="X", color=colour[name], mec="black", label=label)
            continue
        mean = [by_step[s]["mean"] for s in steps]
        _draw(ax, steps, mean, colour[name], worst, label)
        low = [by_step[s]["low"] for s in steps]
        high = [by_step[s]["high"] for s in steps]
        if all(plottable(v) for v in low + high):  # one seed has no interval
            ax.fill_between(steps, low, high, color=colour[name], alpha=0.2, linewidth=0)
            edges += low + high
        drawn += mean
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
    ax.set(xlabel="epoch", ylabel="train_loss (log scale)")
    _log_y(ax, drawn)
    _follow_curves(ax, drawn, edges)
    ax.grid(True, which="both", alpha=0.3)
    full = f"{title}\ngeometric mean over the seeds that finished, band: its 95% interval"
    which = {
        o: [values[n] if values else 0.0 for n in bands if outcomes.get(n, {}).get(o)] for o in (GROWING, OVERFLOW)
    }
    if mappable is None:
        _layout(fig, ax, full, ax.get_legend_handles_labels()[0] + _outcome_handles(which, of_seeds=True))
        return fig
    handles = _outcome_handles(which, of_seeds=True, key=key, listed=True)
    _layout(fig, ax, full, handles, "outcome", mappable, key, list((values or {}).values()))
    return fig


def _follow_curves(ax: Axes, curves: Sequence[float], bands: Sequence[float], decades: float = 1.0) -> None:
    """A log y-range that the curves set: a band reaches at most ``decades`` beyond them, and is cut there (a
    few seeds that scatter over decades give an interval many decades wide)."""
    shown = [v for v in curves if plottable(v)]
    if not shown or ax.get_yscale() != "log":
        return
    low, high = min(shown) / 10**decades, max(shown) * 10**decades
    edges = [v for v in bands if plottable(v)]
    ax.set_ylim(max(low, min(edges + shown)), min(high, max(edges + shown)))


def _counted(counts: Mapping[str, int]) -> str:
    """`` (2 overflow, 1 growing)``: how many seeds overflowed or grew, if any."""
    parts = [f"{counts[o]} {o}" for o in (OVERFLOW, GROWING) if counts.get(o)]
    return f" ({', '.join(parts)})" if parts else ""


def _marks(ax: Axes, marks: Mapping[str, Sequence[float]] | None, where: str) -> None:
    """Each x of ``marks`` ({"overflow": xs, "growing": xs}) as a red marker along the top of the axes: the runs
    that have no final value to draw, or whose final value is no resting point. ``where`` says what the x are
    ("lr where a seed")."""
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for outcome, xs in (marks or {}).items():
        if xs:
            marker, verb = ("X", "overflowed") if outcome == OVERFLOW else ("v", "grew")
            ax.plot(
                list(xs),
                [0.95] * len(xs),
                transform=top,
                linestyle="none",
                marker=marker,
                markersize=8,
                color="red",
                mec="black",
                label=f"{where} {verb}",
            )


def versus_bands(
    xs: Sequence[float],
    ys: Mapping[str, Sequence[Any]],
    xlabel: str,
    title: str,
    vlines: Mapping[str, float] | None = None,
    marks: Mapping[str, Sequence[float]] | None = None,
) -> Figure:
    """Group means of final metrics against a swept key, log-log, with their 95% intervals as error bars.

    ``ys`` maps a label to one ``lrlab.core.replicates.Spread`` per x (``log_spread``: a geometric mean, and an
    interval that stays positive). ``marks`` puts the xs where seeds overflowed or grew along the top."""
    fig, ax = _figure()
    values: list[float] = []
    colour, _ = colours(list(ys))
    for label, spreads in ys.items():
        mean = [s.mean for s in spreads]
        below = [s.mean - s.low if plottable(s.low) and plottable(s.mean) else 0.0 for s in spreads]
        above = [s.high - s.mean if plottable(s.high) and plottable(s.mean) else 0.0 for s in spreads]
        geometric = all(s.geometric for s in spreads)
        name = f"{label} (geometric mean)" if geometric else label
        ax.errorbar(xs, _positive(mean), yerr=[below, above], marker="o", capsize=3, label=name, color=colour[label])
        values += mean
    for label, x in (vlines or {}).items():
        ax.axvline(x, linestyle=":", color="red", label=f"{label} = {x:.3g}")
    ax.set(xlabel=f"{xlabel} (log scale)", ylabel="final value (log scale)", xscale="log")
    _log_y(ax, values)
    ax.grid(True, which="both", alpha=0.3)
    _marks(ax, marks, f"{xlabel} where a seed")
    _layout(fig, ax, title, ax.get_legend_handles_labels()[0])
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
    marks: Mapping[str, Sequence[float]] | None = None,
) -> Figure:
    """Final metrics against a swept numeric key, log-log, with theory drawn as reference lines and ``marks``
    (the xs of runs that overflowed or grew) along the top."""
    fig, ax = _figure()
    colour, _ = colours(list(ys))
    for label, values in ys.items():
        ax.plot(xs, _positive(values), marker="o", label=label, color=colour[label])
    for label, y in (hlines or {}).items():
        ax.axhline(y, linestyle="--", color="gray", label=f"{label} = {y:.3g}")
    for label, x in (vlines or {}).items():
        ax.axvline(x, linestyle=":", color="red", label=f"{label} = {x:.3g}")
    ax.set(xlabel=f"{xlabel} (log scale)", ylabel="final value (log scale)", xscale="log")
    _log_y(ax, [v for values in ys.values() for v in values])
    ax.grid(True, which="both", alpha=0.3)
    _marks(ax, marks, f"{xlabel} where the run")
    _layout(fig, ax, title, ax.get_legend_handles_labels()[0])
    return fig
