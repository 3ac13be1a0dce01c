"""Theory against measurement for the studies of experiments/: read a study's runs from the store, state each answer
with its 95% interval over the seeds, and draw its figure into experiments/figures/.

``python -m lrlab.tools.studies <study>`` (``make study-<study>`` runs it after the sweep) prints a Markdown table
that the study's ``.md`` quotes. The intervals of positive quantities are on the log scale
(``lrlab.core.replicates.log_spread``); a study's runs are its experiment's jobs, the newest run of each
configuration and seed (a study resumed or run again keeps one of each).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from lrlab.api import compose
from lrlab.core.outcome import UNBOUNDED
from lrlab.core.pipeline import generate_dataset, init_model_params
from lrlab.core.replicates import Spread, log_spread, slope_interval
from lrlab.core.schedules import averaging_start
from lrlab.core.theory import LOSS_SCALE, averaged_transient, normal_equations
from lrlab.record.store import read_client, resolve_tracking_uri
from lrlab.sweep import report
from lrlab.sweep.groups import outcome_of

FIGURES = Path(__file__).resolve().parents[2] / "experiments" / "figures"
TAIL_FROM = 300  # sample_size: the least n whose tail average is past its transient (see its last table)


def jobs(client: MlflowClient, study: str) -> pd.DataFrame:
    """One row per job of the study: its params, final metrics, status and outcome; the newest run of each
    config hash (which covers the seed)."""
    experiment = client.get_experiment_by_name(f"study-{study}")
    if experiment is None:
        raise SystemExit(f"lrlab: error: study={study} has no runs in this store: run make study-{study} first")
    rows, seen = [], set()
    for run in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"]):
        tags = run.data.tags
        if "lrlab.job_num" not in tags or tags["lrlab.config_hash"] in seen:
            continue
        seen.add(tags["lrlab.config_hash"])
        rows.append(_row(run))
    return pd.DataFrame(rows)


def _row(run: Run) -> dict[str, object]:
    return {
        **run.data.params,
        **run.data.metrics,
        "status": run.info.status,
        "outcome": outcome_of(run),
        "run_id": run.info.run_id,
    }


def _outcomes(group: pd.DataFrame) -> str:
    """How many of the group's runs came to each outcome, most first: ``at_floor 4, above_floor 1``."""
    return ", ".join(f"{k} {v}" for k, v in group["outcome"].value_counts().items())


def _numeric(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    frame = frame.copy()
    for key in keys:
        frame[key] = pd.to_numeric(frame[key])
    return frame


def _table(rows: Sequence[Mapping[str, object]]) -> str:
    """A Markdown table of ``rows`` (dicts with the same keys)."""
    if not rows:
        return "(no runs)"
    lines = [list(rows[0]), ["---"] * len(rows[0]), *([str(v) for v in row.values()] for row in rows)]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def _save(figure: object, figures: Path, study: str, name: str) -> Path:
    figures.mkdir(parents=True, exist_ok=True)
    path = figures / f"{study}-{name}.png"
    figure.savefig(path)  # type: ignore[attr-defined]
    return path


def noise_floor(frame: pd.DataFrame, figures: Path) -> str:
    """measured / theory stationary excess loss by reader, batch size, noise and lr."""
    keys = ["reader", "batch_size", "dataset.noise_std", "lr"]
    frame = _numeric(frame, ["batch_size", "dataset.noise_std", "lr"])
    rows, lines = [], defaultdict(list)
    for key, group in frame.groupby(keys):
        reader, b, noise, lr = key
        ratios = group["excess_loss_ratio"].dropna().tolist() if "excess_loss_ratio" in group else []
        theory = group["theory_excess_loss"].dropna() if "theory_excess_loss" in group else pd.Series(dtype=float)
        ratio = log_spread(ratios)
        edge = float(group["lr_critical_ms"].median()) if "lr_critical_ms" in group else math.nan
        if not ratios:
            verdict = f"past lr_critical_ms = {edge:.3g}: no stationary state"
        else:
            verdict = "holds 1" if ratio.low <= 1 <= ratio.high else ("below 1" if ratio.high < 1 else "above 1")
            lines[(reader, b)].append((lr, noise, ratio))
        rows.append(
            {
                "reader": reader,
                "b": b,
                "noise": noise,
                "lr": lr,
                "theory (median)": f"{theory.median():.3g}" if len(theory) else "–",
                "measured / theory": ratio.text() if ratios else "–",
                "interval vs 1": verdict,
                "outcomes": _outcomes(group),
            }
        )
    for noise in sorted(frame["dataset.noise_std"].unique()):
        series = {
            f"{reader} b={b:g}": [(lr, s) for lr, n, s in points if n == noise]
            for (reader, b), points in sorted(lines.items())
        }
        series = {label: points for label, points in series.items() if points}
        xs = sorted({lr for points in series.values() for lr, _ in points})
        ys = {
            label: [dict(points).get(x, Spread(0, *(math.nan,) * 4, True)) for x in xs]
            for label, points in series.items()
        }
        title = f"noise_floor: measured / theory stationary excess loss, noise_std={noise:g}"
        figure = report.versus_bands(xs, ys, "lr", title)
        figure.axes[0].axhline(1.0, color="black", linewidth=1)  # where the theory is exact
        figure.axes[0].set_ylabel("measured / theory_excess_loss (log scale)")
        _save(figure, figures, "noise_floor", f"ratio-noise{noise:g}")
    return _table(rows)


def stability(frame: pd.DataFrame, figures: Path) -> str:
    """Per batch size: the measured edge (the least lr at which most seeds do not stay bounded) beside
    lr_critical_ms and lr_critical_gd."""
    frame = _numeric(frame, ["batch_size", "lr"])
    rows, edges = [], {}
    for b, by_b in frame.groupby("batch_size"):
        fractions = {
            lr: float(g["outcome"].isin(UNBOUNDED).mean()) for lr, g in sorted(by_b.groupby("lr"), key=lambda kv: kv[0])
        }
        stable = [lr for lr, f in fractions.items() if f == 0]
        onset = next((lr for lr, f in fractions.items() if f > 0.5), math.nan)
        last_stable = max((lr for lr in stable if not lr > onset), default=math.nan)  # below the onset, if any
        ms, gd = float(by_b["lr_critical_ms"].median()), float(by_b["lr_critical_gd"].median())
        edges[b] = (last_stable, onset, ms, gd)
        counts = " ".join(f"{lr:g}:{round(f * len(by_b[by_b.lr == lr]))}" for lr, f in fractions.items())
        rows.append(
            {
                "b": b,
                "lr_critical_ms": f"{ms:.3g} [{by_b['lr_critical_ms'].min():.3g}, {by_b['lr_critical_ms'].max():.3g}]",
                "lr_critical_gd": f"{gd:.3g}",
                "largest lr all bounded": f"{last_stable:g}",
                "least lr most unbounded": f"{onset:g}",
                "unbounded seeds per lr": counts,
            }
        )
    xs = sorted(edges)
    figure = report.versus(
        xs,
        {
            "measured: largest lr all seeds bounded": [edges[b][0] for b in xs],
            "measured: least lr most seeds unbounded": [edges[b][1] for b in xs],
            "lr_critical_ms (mean-square edge)": [edges[b][2] for b in xs],
            "lr_critical_gd (full-batch GD)": [edges[b][3] for b in xs],
        },
        "batch_size",
        "stability: SGD's edge against the batch size (with replacement)",
    )
    figure.axes[0].set_ylabel("lr (log scale)")
    _save(figure, figures, "stability", "edge_vs_batch")
    return _table(rows)


def schedules(frame: pd.DataFrame, figures: Path) -> str:
    """Final excess loss by schedule, beside constant-step SGD's stationary excess loss."""
    rows = []
    floor = log_spread(frame["theory_excess_loss"].dropna().tolist())
    for name, group in frame.groupby("schedule", sort=False):
        final = log_spread(group["excess_loss"].tolist())
        rows.append(
            {
                "schedule": name,
                "final excess_loss": final.text(),
                "÷ constant's theory floor": f"{final.mean / floor.mean:.3g}",
                "w_error": log_spread(group["w_error"].tolist()).text(),
                "outcomes": _outcomes(group),
            }
        )
    return f"constant-step theory floor (lr 0.3): {floor.text()}\n\n" + _table(rows)


def sample_size(frame: pd.DataFrame, figures: Path) -> str:
    """w_error against n: the log-log slope with its bootstrap interval, for the last iterate, the Polyak
    average and the least-squares fit."""
    frame = _numeric(frame, ["dataset.num_examples"])
    rows, series, sizes = [], {}, []
    cases: list[tuple[str, str, str, float]] = [
        ("SGD, last iterate", "none", "w_error", 0),
        ("SGD, Polyak average", "polyak", "avg_w_error", 0),
        ("SGD, tail average", "tail", "avg_w_error", 0),
        ("least squares (OLS)", "none", "ols_w_error", 0),
        # Where the tail's transient is over (the last table: below the OLS error from n = 300 on).
        (f"SGD, tail average, n ≥ {TAIL_FROM}", "tail", "avg_w_error", TAIL_FROM),
    ]
    for label, averaging, metric, least in cases:
        chosen = frame[(frame["averaging"] == averaging) & (frame["dataset.num_examples"] >= least)]
        chosen = chosen.dropna(subset=[metric])
        by_n = sorted(chosen.groupby("dataset.num_examples"), key=lambda kv: kv[0])
        xs = [float(n) for n, _ in by_n]
        groups = [g[metric].tolist() for _, g in by_n]
        if len(xs) < 2:
            continue
        slope, low, high = slope_interval(xs, groups)
        inside = "inside" if low <= -0.5 <= high else "outside"
        rows.append(
            {"estimate": label, "slope": f"{slope:.2f}", "95% bootstrap": f"[{low:.2f}, {high:.2f}]", "-0.5": inside}
        )
        if least:
            continue  # a fit over fewer sizes: the slope only
        series[label] = (xs, [log_spread(g) for g in groups])
        sizes.append(
            {"estimate": label, **{f"n={n:g}": log_spread(g).text(2) for n, g in zip(xs, groups, strict=True)}}
        )
    xs = series[cases[0][0]][0]
    figure = report.versus_bands(xs, {k: v[1] for k, v in series.items()}, "num_examples", "w error against n")
    _save(figure, figures, "sample_size", "error_vs_n")
    return _table(rows) + "\n\n" + _table(sizes) + "\n\n" + _table(_averaged_against_theory(frame))


def _averaged_against_theory(frame: pd.DataFrame) -> list[dict[str, object]]:
    """Per averaging and n: the measured ``avg_w_error`` against its prediction without the minibatch noise: the
    error of θ_ols plus gradient descent's averaged transient (``averaged_transient``), for each seed's own data and
    initial parameters, composed as the study composes them (``experiment=sample_size``)."""
    rows = []
    for (averaging, n), group in sorted(frame.groupby(["averaging", "dataset.num_examples"])):
        if averaging == "none":
            continue
        parts = [_averaged_w_error(int(n), str(seed), str(averaging)) for seed in group["seed"]]
        predicted = log_spread([p for p, _ in parts]).mean  # the geometric mean, as the measured one's
        measured = log_spread(group["avg_w_error"].tolist())
        rows.append(
            {
                "averaging": averaging,
                "n": f"{n:g}",
                "measured avg_w_error": measured.text(2),
                "predicted": f"{predicted:.2g}",
                "transient ‖·‖ (median)": f"{np.median([t for _, t in parts]):.2g}",
                "interval": "holds it" if measured.low <= predicted <= measured.high else "misses it",
            }
        )
    return rows


def _averaged_w_error(num_examples: int, seed: str, averaging: str) -> tuple[float, float]:
    """‖w_ols + transient_w − true_w‖ and ‖transient_w‖ for one job of the sample-size study."""
    cfg = compose(
        "experiment=sample_size", f"dataset.num_examples={num_examples}", f"seed={seed}", f"averaging={averaging}"
    )
    data = generate_dataset(cfg)
    gram, moments = normal_equations(data.features, data.labels)  # AᵀA and Aᵀy, A = [X, 1], as the run's references
    theta = np.linalg.solve(gram.numpy(), moments.numpy())
    w, b = init_model_params(cfg, len(theta) - 1)
    start_from = np.concatenate([w.double().numpy().ravel(), b.double().numpy().ravel()])
    hessian = 2 * LOSS_SCALE[cfg.loss.name.value] * gram.numpy() / len(data.features)
    total = cfg.num_epochs * math.ceil(num_examples / cfg.batch_size)
    start = averaging_start(cfg.averaging, total)
    assert start is not None and data.true_w is not None
    transient = averaged_transient(hessian, start_from - theta, cfg.lr, start, total)[:-1]
    error = float(np.linalg.norm(theta[:-1] + transient - np.asarray(data.true_w)))
    return error, float(np.linalg.norm(transient))


def lr_sweep(frame: pd.DataFrame, figures: Path) -> str:
    """Per lr: how many seeds ended in each outcome, beside lr_critical_ms (batch 10) and lr_critical_gd."""
    frame = _numeric(frame, ["lr"])
    rows = []
    for lr, group in frame.groupby("lr"):
        finished = group[group["status"] == "FINISHED"]
        rows.append(
            {
                "lr": lr,
                "final excess_loss (finished seeds)": log_spread(finished["excess_loss"].tolist()).text(),
                "outcomes": _outcomes(group),
            }
        )
    ms, gd = frame["lr_critical_ms"].median(), frame["lr_critical_gd"].median()
    return f"lr_critical_ms (b=10, median) {ms:.3g}; lr_critical_gd {gd:.3g}\n\n" + _table(rows)


def batch_size(frame: pd.DataFrame, figures: Path) -> str:
    """Per batch size: the final excess loss against SGD's stationary excess loss at that batch size."""
    frame = _numeric(frame, ["batch_size"])
    rows = []
    for b, group in frame.groupby("batch_size"):
        final, theory = log_spread(group["excess_loss"].tolist()), log_spread(group["theory_excess_loss"].tolist())
        rows.append(
            {
                "b": b,
                "final excess_loss": final.text(),
                "theory_excess_loss": theory.text(),
                "lr_critical_ms": f"{group['lr_critical_ms'].median():.3g}",
                "outcomes": _outcomes(group),
            }
        )
    return _table(rows)


ANALYSES: dict[str, Callable[[pd.DataFrame, Path], str]] = {
    "noise_floor": noise_floor,
    "stability": stability,
    "schedules": schedules,
    "sample_size": sample_size,
    "lr_sweep": lr_sweep,
    "batch_size": batch_size,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lrlab.tools.studies", description=__doc__.splitlines()[0])
    parser.add_argument("study", help=f"a study of experiments/; those with an analysis: {', '.join(sorted(ANALYSES))}")
    parser.add_argument("--tracking-uri", default=None, help="the store (default: as lrlab resolves it)")
    parser.add_argument("--figures", type=Path, default=FIGURES, help=f"where the figures go (default: {FIGURES})")
    args = parser.parse_args(argv)
    if args.study not in ANALYSES:
        print(f"{args.study}: its answer is the sweep's own summary (no theory analysis here)")
        return 0
    client = read_client(resolve_tracking_uri(args.tracking_uri, Path.cwd()))
    frame = jobs(client, args.study)
    print(f"{args.study}: {len(frame)} jobs; {np.sum(frame['status'] == 'FINISHED')} FINISHED")
    print(ANALYSES[args.study](frame, args.figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
