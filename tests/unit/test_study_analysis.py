"""lrlab.tools.studies: the statements a study's answer quotes, on tables whose answer is known.

The tables stand for a store's runs (params are strings, as MLflow keeps them); the store side, reading the
runs, is the same ``search_runs`` every summary uses and is exercised by ``make studies``."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lrlab.tools import studies


def stability_table() -> pd.DataFrame:
    """b=1: seeds bounded up to lr 0.5, one of five unbounded at 0.6, all at 0.8; b=10 bounded everywhere."""
    rows = []
    unbounded = {0.4: 0, 0.5: 0, 0.6: 1, 0.8: 5}
    for lr, bad in unbounded.items():
        for seed in range(5):
            outcome = ("growing" if seed % 2 else "overflow") if seed < bad else "at_floor"
            rows.append({"batch_size": "1", "lr": str(lr), "outcome": outcome, "status": "FINISHED"})
            rows.append({"batch_size": "10", "lr": str(lr), "outcome": "at_floor", "status": "FINISHED"})
    frame = pd.DataFrame(rows)
    frame["lr_critical_ms"] = frame["batch_size"].map({"1": 0.43, "10": 1.44})
    frame["lr_critical_gd"] = 1.88
    return frame


def test_the_measured_edge_brackets_where_most_seeds_stop_being_bounded(tmp_path: Path) -> None:
    table = studies.stability(stability_table(), tmp_path)
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()}
    assert "| 0.43 [0.43, 0.43] | 1.88 | 0.5 | 0.8 |" in lines["1"]  # all bounded to 0.5, most unbounded from 0.8
    assert "0.6:1" in lines["1"] and "0.8:5" in lines["1"]
    assert "| 0.8 | nan |" in lines["10"]  # never unbounded: no onset in the grid
    assert (tmp_path / "stability-edge_vs_batch.png").stat().st_size > 0


def test_the_noise_floor_verdict_is_the_interval_against_1(tmp_path: Path) -> None:
    rows = []
    ratios = {"0.1": [0.9, 1.1, 1.0, 0.95, 1.05], "0.3": [0.40, 0.42, 0.38, 0.41, 0.39]}
    for lr, values in ratios.items():
        for ratio in values:
            rows.append(
                {
                    "reader": "permutation",
                    "batch_size": "10",
                    "dataset.noise_std": "1.0",
                    "lr": lr,
                    "excess_loss_ratio": ratio,
                    "theory_excess_loss": 0.01,
                    "lr_critical_ms": 1.44,
                    "outcome": "at_floor",
                }
            )
    rows.append({**rows[0], "lr": "3.0", "excess_loss_ratio": math.nan, "theory_excess_loss": math.nan})
    table = studies.noise_floor(pd.DataFrame(rows), tmp_path)
    verdicts = {line.split(" | ")[3]: line.split(" | ")[6] for line in table.splitlines()[2:]}
    assert verdicts == {"0.1": "holds 1", "0.3": "below 1", "3.0": "past lr_critical_ms = 1.44: no stationary state"}
    assert (tmp_path / "noise_floor-ratio-noise1.png").is_file()


def test_the_slope_of_an_error_that_falls_as_one_over_root_n_holds_minus_one_half(tmp_path: Path) -> None:
    rows = []
    for n in (100, 1000, 10000):
        for seed, wobble in enumerate((0.9, 1.0, 1.1)):
            error = wobble / math.sqrt(n)
            for averaging, last in (("none", 0.05 * wobble), ("polyak", 0.05 * wobble)):
                rows.append(
                    {
                        "dataset.num_examples": str(n),
                        "averaging": averaging,
                        "seed": str(seed),
                        "w_error": last,  # a floor: slope 0
                        "avg_w_error": error if averaging == "polyak" else math.nan,
                        "ols_w_error": error,
                    }
                )
    table = studies.sample_size(pd.DataFrame(rows), tmp_path)
    slopes = table.split("\n\n")[0].splitlines()[2:]
    verdicts = {line.split(" | ")[0].strip("| "): line.split(" | ")[-1].strip(" |") for line in slopes}
    assert verdicts == {
        "SGD, last iterate": "outside",
        "SGD, Polyak average": "inside",
        "least squares (OLS)": "inside",
    }
