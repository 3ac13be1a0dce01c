"""The figures (lrlab/sweep/report.py) and the log-scale interval they draw (lrlab/core/replicates.log_spread)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from scipy import stats

from lrlab.core.replicates import log_spread, spread
from lrlab.sweep import report

LRS = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0]
LONG_TITLE = "sweep lr=" + ",".join(f"{lr:g}" for lr in LRS) + " seed=range(0,5)"


# The interval of a positive quantity, on the log scale.


def test_log_spread_is_the_t_interval_of_the_mean_log_exponentiated() -> None:
    values = [2e-5, 3e-4, 1e-5, 8e-2, 5e-5]
    logs = np.log(values)
    n, mean, sd = len(values), logs.mean(), logs.std(ddof=1)
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    got = log_spread(values)
    assert got.geometric and got.n == n
    assert got.mean == pytest.approx(stats.gmean(values), rel=1e-12)
    assert got.std == pytest.approx(sd, rel=1e-12)
    assert (got.low, got.high) == pytest.approx((math.exp(mean - half), math.exp(mean + half)), rel=1e-12)
    # The arithmetic t interval of the same values reaches below zero; this one cannot.
    assert spread(values).low < 0 < got.low < got.mean < got.high


def test_log_spread_of_two_values_by_hand() -> None:
    # n = 2: t(0.975, 1) = 12.7062047361747; ln values 0 and ln 100, mean ln 10, s = ln(100)/√2.
    got = log_spread([1.0, 100.0])
    half = 12.7062047361747 * (math.log(100) / math.sqrt(2)) / math.sqrt(2)
    assert got.mean == pytest.approx(10.0)
    assert got.low == pytest.approx(10 * math.exp(-half)) and got.high == pytest.approx(10 * math.exp(half))
    assert got.text() == f"10 ×/÷ 26 [{got.low:.3g}, {got.high:.3g}]"  # exp(s) = 100^(1/√2) ≈ 25.9


def test_log_spread_without_an_interval() -> None:
    one = log_spread([4.0])
    assert one.n == 1 and one.mean == 4.0 and math.isnan(one.low) and math.isnan(one.high)
    assert log_spread([]).n == 0 and math.isnan(log_spread([]).mean)
    for bad in ([1.0, 0.0], [1.0, -2.0], [1.0, math.inf], [1.0, math.nan]):
        got = log_spread(bad)
        assert math.isnan(got.mean) and math.isnan(got.low), bad  # a log scale has no place for them


def test_log_spread_of_values_that_scatter_past_float64_gives_an_infinite_bound() -> None:
    # Two seeds at 1e-3 and 1e300 (a run about to overflow): the upper bound exp(...) is past float64's range.
    got = log_spread([1e-3, 1e300])
    assert got.mean == pytest.approx(math.sqrt(1e-3 * 1e300), rel=1e-9)
    assert got.high == math.inf and 0 <= got.low < got.mean  # the lower bound underflows to 0


# Figures.


def rendered(fig: Figure) -> None:
    fig.canvas.draw()


def inches(fig: Figure, box: object) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box.x0, box.y0, box.x1, box.y1  # type: ignore[attr-defined]
    return x0 / fig.dpi, y0 / fig.dpi, x1 / fig.dpi, y1 / fig.dpi


def legend_of(fig: Figure) -> Legend:
    (legend,) = [a.get_legend() for a in fig.axes if a.get_legend() is not None]
    return legend


def main_axes(fig: Figure) -> Axes:
    return fig.axes[0]


def colorbars(fig: Figure) -> list[Axes]:
    return [a for a in fig.axes if getattr(a, "_colorbar", None) is not None]


def assert_fits(fig: Figure) -> None:
    """Legend right of the axes, and the legend and the title inside the figure."""
    rendered(fig)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    width, height = fig.get_size_inches()
    ax = main_axes(fig)
    axes_box = inches(fig, ax.get_window_extent(renderer))
    legend_box = inches(fig, legend_of(fig).get_window_extent(renderer))
    title_box = inches(fig, ax.title.get_window_extent(renderer))
    assert legend_box[0] >= axes_box[2], "the legend is over the axes"
    for box in (legend_box, title_box):
        assert box[0] >= 0 and box[2] <= width + 1e-6 and box[3] <= height + 1e-6, box


def lr_curves() -> tuple[dict[str, list[tuple[int, float]]], dict[str, str]]:
    curves, outcomes = {}, {}
    for lr in LRS:
        name = f"lr={lr:g}"
        if lr >= 2.25:
            curves[name], outcomes[name] = [(1, 1.8e308)], "overflow"  # MLflow's inf
        elif lr == 1.75:
            curves[name], outcomes[name] = [(e, 0.01 * 2.5**e) for e in range(1, 7)], "growing"
        else:
            curves[name], outcomes[name] = [(e, 5e-5 + 10 * (1 - min(0.9, lr)) ** e) for e in range(1, 7)], "at_floor"
    return curves, outcomes


def test_a_numeric_key_colours_along_a_log_colour_bar() -> None:
    curves, outcomes = lr_curves()
    fig = report.sweep_overlay(curves, LONG_TITLE, outcomes, {f"lr={lr:g}": lr for lr in LRS}, "lr")
    (cax,) = colorbars(fig)
    assert cax.get_ylabel() == "lr" and cax.get_yscale() == "log"  # 0.001 to 3 spans more than a decade
    lines = {line.get_label(): line for line in main_axes(fig).get_lines()}
    first, last = (np.asarray(lines[name].get_color()) for name in ("lr=0.001", "lr=3"))
    assert not np.allclose(first, last)
    assert_fits(fig)
    # The legend is about outcomes, listing the values that grew or overflowed.
    texts = [t.get_text() for t in legend_of(fig).get_texts()]
    assert texts[0] == "bounded" and "lr=1.75" in texts[1] and "lr=2.25, 2.5, 3" in texts[2]


def test_a_narrow_numeric_range_is_linear_and_a_categorical_sweep_has_no_colour_bar() -> None:
    curves = {f"batch_size={b}": [(1, 1.0), (2, 0.5)] for b in (10, 20, 40)}
    values = {f"batch_size={b}": float(b) for b in (10, 20, 40)}
    (cax,) = colorbars(report.sweep_overlay(curves, "sweep", values=values, key="batch_size"))
    assert cax.get_yscale() == "linear"
    names = {f"model={m} loss={lo}": [(1, 1.0), (2, 0.5)] for m in ("scratch", "linear") for lo in ("squared", "mse")}
    fig = report.sweep_overlay(names, "sweep model=scratch,linear loss=squared,mse")
    assert colorbars(fig) == []
    assert [t.get_text() for t in legend_of(fig).get_texts()] == list(names)
    assert_fits(fig)


def test_outcomes_are_drawn_apart() -> None:
    curves, outcomes = lr_curves()
    fig = report.sweep_overlay(curves, "sweep", outcomes, {f"lr={lr:g}": lr for lr in LRS}, "lr")
    ax = main_axes(fig)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert lines["lr=1.75"].get_linestyle() == "--" and lines["lr=0.1"].get_linestyle() == "-"
    crosses = [line for line in ax.get_lines() if line.get_marker() == "X"]
    assert len(crosses) == 3  # one per overflow: at the top of the axes, its loss being off any scale
    for cross in crosses:  # x in epochs, y in the axes' height
        assert cross.get_transform().contains_branch_seperately(ax.transData) == (True, False)
        assert list(cross.get_xdata()) == [1] and cross.get_ydata()[0] == pytest.approx(0.97)


def test_an_overflow_with_a_last_finite_point_ends_with_an_x_there() -> None:
    fig = report.sweep_overlay({"lr=2": [(1, 50.0), (2, 2e13)]}, "sweep", {"lr=2": "overflow"})
    (cross,) = [line for line in main_axes(fig).get_lines() if line.get_marker() == "X"]
    assert list(cross.get_xdata()) == [2] and list(cross.get_ydata()) == [2e13]


def group_bands(rng: np.random.Generator) -> tuple[dict[str, dict[int, dict[str, float]]], dict[str, dict[str, int]]]:
    bands, counts = {}, {}
    for lr in LRS:
        name = f"lr={lr:g}"
        if lr >= 2.25:  # every seed overflowed: no curve
            bands[name], counts[name] = {}, {"overflow": 5}
            continue
        seeds = [[10 * 0.5**e * rng.lognormal(0, 2.0) for e in range(1, 6)] for _ in range(5)]
        bands[name] = {}
        for e in range(5):
            at = log_spread([s[e] for s in seeds])
            bands[name][e + 1] = {"mean": at.mean, "low": at.low, "high": at.high}
        counts[name] = {"growing": 1} if lr == 1.75 else {"overflow": 2} if lr == 2.0 else {"at_floor": 5}
    return bands, counts


def test_group_bands_stay_positive_and_every_group_is_accounted_for() -> None:
    bands, counts = group_bands(np.random.default_rng(0))
    fig = report.group_overlay(bands, LONG_TITLE, counts, {f"lr={lr:g}": lr for lr in LRS}, "lr")
    ax = main_axes(fig)
    polys = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(polys) == 10  # one band per group that has finished seeds
    for poly in polys:
        ys = np.concatenate([path.vertices[:, 1] for path in poly.get_paths()])
        assert (ys > 0).all()
    assert len(colorbars(fig)) == 1
    assert_fits(fig)
    texts = [t.get_text() for t in legend_of(fig).get_texts()]
    assert any("a seed grew" in t and "lr=1.75" in t for t in texts)
    assert any("a seed overflowed" in t and "lr=2, 2.25, 2.5, 3" in t for t in texts)
    assert ax.title.get_text().count("\n") >= 1  # the sweep's name, then what the band is


def test_versus_bands_error_bars_stay_positive_and_marks_sit_on_top() -> None:
    rng = np.random.default_rng(1)
    xs = LRS[:9]
    spreads = [log_spread(list(1e-4 * rng.lognormal(0, 3.0, size=5))) for _ in xs]
    fig = report.versus_bands(
        xs, {"train_loss": spreads}, "lr", "final train_loss against lr", marks={"overflow": [2.0, 3.0]}
    )
    ax = main_axes(fig)
    bars = [c for c in ax.collections if c.get_segments()]  # type: ignore[attr-defined]
    lows = [segment[:, 1].min() for c in bars for segment in c.get_segments()]  # type: ignore[attr-defined]
    assert min(lows) > 0
    assert sorted(lows) == pytest.approx(sorted(s.low for s in spreads), rel=1e-9)  # the bars end at the interval
    (cross,) = [line for line in ax.get_lines() if line.get_marker() == "X"]
    assert list(cross.get_xdata()) == [2.0, 3.0] and cross.get_label() == "lr where a seed overflowed"
    assert_fits(fig)


def test_titles_wrap_at_commas_never_inside_parentheses() -> None:
    lines = report.wrap(LONG_TITLE, 40)
    assert "".join(lines).replace(" ", "") == LONG_TITLE.replace(" ", "")  # nothing lost
    assert lines == ["sweep lr=0.001,0.003,0.01,0.03,0.1,0.3,", "1,1.5,1.75,2,2.25,2.5,3 seed=range(0,5)"]
    assert report.wrap(LONG_TITLE, 20)[-1] == "seed=range(0,5)"  # its comma is no place to break
    assert report.wrap("a (b, c) d", 3) == ["a", "(b, c)", "d"]  # a piece longer than the width stays whole
    assert report.wrap("first\nsecond", 80) == ["first", "second"]
    fig = report.versus([1.0, 2.0], {"train_loss": [1.0, 2.0]}, "lr", LONG_TITLE * 2)
    assert_fits(fig)
    assert main_axes(fig).title.get_text().count("\n") >= 1


def test_one_runs_curves_have_their_legend_outside() -> None:
    history = {key: [(e, 10 * 0.3**e) for e in range(1, 4)] for key in report.CURVES}
    fig = report.loss_curves(history, "lr=0.03 batch_size=10")
    assert_fits(fig)
    assert [t.get_text() for t in legend_of(fig).get_texts()] == list(report.CURVES)
