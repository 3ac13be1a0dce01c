"""``dataset=csv``: a table read, checked and hashed by its bytes; errors measured against its least-squares fit.

Real Hydra composition (``make_cfg``), the shipped example ``examples/data/houses.csv`` and small tables written
under tmp_path. The oracle for the least-squares fit is numpy's ``lstsq``.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig

from lrlab.core.batched import train_together
from lrlab.core.config import LEAST_SQUARES_FIT, TRUE_PARAMETERS, Config, ConfigError
from lrlab.core.pipeline import closed_form, generate_dataset, run_pipeline
from lrlab.record.provenance import config_hash
from lrlab.sweep.compose import to_config
from tests.conftest import REPO

MakeCfg = Callable[..., Config]
HOUSES = REPO / "examples" / "data" / "houses.csv"
FEATURES = ("area", "garden", "age", "distance")  # every numeric column but the target; district is text


def table(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def csv_cfg(make_cfg: MakeCfg, path: Path | str, *overrides: str, target: str = "y") -> Config:
    """A small table's config; batch_size 1 unless ``overrides`` say otherwise (the default 10 is too many rows)."""
    sized = overrides if any(o.startswith("batch_size=") for o in overrides) else ("batch_size=1", *overrides)
    return make_cfg("dataset=csv", f"dataset.path={path}", f"dataset.target={target}", *sized)


def least_squares(path: Path, features: tuple[str, ...], target: str) -> np.ndarray:
    """(w..., b) of the least-squares fit, by numpy from the file's text, on the float32 values a run trains on."""
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    X = np.array([[float(row[f]) for f in features] for row in rows], np.float32).astype(np.float64)
    y = np.array([float(row[target]) for row in rows], np.float32).astype(np.float64)
    return np.linalg.lstsq(np.c_[X, np.ones(len(X))], y, rcond=None)[0]


def test_the_example_is_read_with_every_numeric_column_but_the_target(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("dataset=csv")
    assert (cfg.dataset.name, cfg.dataset.path, cfg.dataset.target) == ("csv", str(HOUSES), "price")
    assert (cfg.dataset.true_w, cfg.dataset.num_examples) == (None, None)  # the synthetic keys are null
    read = cfg.dataset.table()
    assert read.columns == ("district", *FEATURES, "price") and read.features == FEATURES
    assert read.numeric == (False, True, True, True, True, True)
    assert cfg.dataset.shape() == (300, 4) and read.sha256 == hashlib.sha256(HOUSES.read_bytes()).hexdigest()
    data = generate_dataset(cfg)  # step 1: the table's rows, float32, and no true parameters
    assert data.features.shape == (300, 4) and data.labels.shape == (300, 1) and data.features.dtype == torch.float32
    assert data.true_w is None and data.true_b is None
    first = HOUSES.read_text().splitlines()[1].split(",")  # west,1.61,1,0.518,0.767,3.779
    assert data.features[0].tolist() == torch.tensor([float(v) for v in first[1:5]]).tolist()
    assert data.labels[0].item() == torch.tensor(float(first[5])).item()


def test_listed_features_are_used_in_their_order_and_the_rest_left_out(make_cfg: MakeCfg, tmp_path: Path) -> None:
    path = table(tmp_path / "t.csv", "a,name,b,y,c", "1,x,2,3,4", "2,y,0.5,1,1e-3", "3,z,-1,2,0")
    default = csv_cfg(make_cfg, path)
    assert default.dataset.table().features == ("a", "b", "c")  # the text column is skipped
    listed = csv_cfg(make_cfg, path, "dataset.features=[c,a]")
    assert listed.dataset.table().features == ("c", "a")
    data = generate_dataset(listed)
    assert data.features.tolist() == torch.tensor([[4, 1], [1e-3, 2], [0, 3]], dtype=torch.float32).tolist()
    assert data.labels.reshape(-1).tolist() == [3.0, 1.0, 2.0]
    # the default's columns listed in its order are one computation; another selection, or target, is another
    assert config_hash(csv_cfg(make_cfg, path, "dataset.features=[a,b,c]")) == config_hash(default)
    assert config_hash(listed) != config_hash(default)
    assert config_hash(csv_cfg(make_cfg, path, target="c")) != config_hash(default)


def test_the_identity_is_the_files_bytes_not_its_path_or_mtime(make_cfg: MakeCfg, tmp_path: Path) -> None:
    original = table(tmp_path / "one.csv", "a,b,y", "1,2,3", "2,1,4", "0,0,1", "5,1,2")
    copy = tmp_path / "elsewhere" / "two.csv"
    copy.parent.mkdir()
    shutil.copy(original, copy)
    os.utime(copy, (1_000_000_000, 1_000_000_000))  # another mtime
    same = config_hash(csv_cfg(make_cfg, original))
    assert config_hash(csv_cfg(make_cfg, copy)) == same
    assert csv_cfg(make_cfg, copy).identity()["dataset"] == {
        "sha256": hashlib.sha256(original.read_bytes()).hexdigest(),
        "target": "y",
        "features": ["a", "b"],
    }
    copy.write_text(original.read_text().replace("5,1,2", "5,1,2.5"))  # one value changed
    assert config_hash(csv_cfg(make_cfg, copy)) != same
    assert "data" not in csv_cfg(make_cfg, original).identity()["streams"]  # a table draws nothing
    assert config_hash(csv_cfg(make_cfg, original, "data_seed=9")) == same
    assert config_hash(csv_cfg(make_cfg, original, "seed=1")) != same  # the init and shuffle streams count


def test_synthetic_data_keeps_its_identity_and_its_true_parameters(make_cfg: MakeCfg) -> None:
    cfg = make_cfg()
    assert "path" not in cfg.identity()["dataset"] and cfg.dataset.errors_against == TRUE_PARAMETERS
    assert config_hash(cfg) == "640ace0cfc09071d"  # as before tables existed
    data = generate_dataset(cfg)
    assert (data.true_w, data.true_b) == ((2.0, -3.4), 4.2)
    assert closed_form(cfg, data).against.kind == TRUE_PARAMETERS


def test_errors_are_measured_against_the_least_squares_fit_and_reach_it(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("dataset=csv", "batch_size=300", "lr=0.4", "num_epochs=600")  # full-batch GD, below its edge
    assert cfg.dataset.errors_against == LEAST_SQUARES_FIT
    ref = closed_form(cfg, generate_dataset(cfg))
    fit = least_squares(HOUSES, FEATURES, "price")
    assert ref.against.kind == LEAST_SQUARES_FIT
    assert np.allclose([*ref.against.w, ref.against.b], fit, rtol=1e-9, atol=1e-12)
    assert (ref.ols_w_error, ref.ols_b_error) == (0.0, 0.0)
    assert ref.lr_critical_gd == pytest.approx(0.444, abs=1e-3)
    last = run_pipeline(cfg).history[-1]
    assert last.w_error < 1e-5 and last.b_error < 1e-5 and 0 <= last.excess_loss < 1e-9
    first = run_pipeline(make_cfg("dataset=csv", "num_epochs=1")).history[0]
    assert first.w_error > 0.1  # the errors measure something: one epoch at the default lr is far from the fit


def test_the_compiled_engine_and_the_vectorized_launcher_train_a_table(make_cfg: MakeCfg) -> None:
    common = ("dataset=csv", "num_epochs=4", "optimizer=sgd")
    autograd = run_pipeline(make_cfg(*common, "lr=0.1")).history
    compiled = run_pipeline(make_cfg(*common, "lr=0.1", "engine=compiled")).history
    for got, want in zip(compiled, autograd, strict=True):  # the same update, float32; d = 4 sums in index order
        assert got.w_error == pytest.approx(want.w_error, abs=1e-5)
        assert got.train_loss == pytest.approx(want.train_loss, rel=1e-4)
    for engine in ("autograd", "compiled"):  # each member of a group, bit for bit its own run's history
        cfgs = [make_cfg(*common, f"engine={engine}", lr) for lr in ("lr=0.05", "lr=0.1")]
        for cfg, (history, outcome) in zip(cfgs, train_together(cfgs), strict=True):
            assert not isinstance(outcome, BaseException), outcome
            assert history == run_pipeline(cfg).history, engine


def test_a_relative_path_is_read_from_where_lrlab_started(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    started = tmp_path / "start"
    started.mkdir()
    table(started / "t.csv", "a,y", "1,2", "2,3")
    composed = compose_cfg(
        "dataset=csv", "dataset.path=t.csv", "dataset.target=y", "batch_size=1", return_hydra_config=True
    )
    composed.hydra.runtime.cwd = str(started)  # Hydra's record of the folder lrlab started in; this one runs elsewhere
    cfg = to_config(composed, dict(composed.hydra.runtime.choices))
    assert cfg.dataset.path == str(started / "t.csv") and Path.cwd() != started
    assert composed.dataset.path == "t.csv"  # the job's config stays as composed, as it is recorded


BAD = [  # (the table, its overrides, the key the one line names, what it says)
    (None, ("dataset.path={tmp}/nope.csv",), "dataset.path", "no such file"),
    ("a,b,y\n1,2,3\n", ("dataset.target=price",), "dataset.target", "no such column; columns: a, b, y"),
    ("a,b,y\n1,2,3\n", ("dataset.features=[a,zz]",), "dataset.features", "'zz': no such column"),
    ("a,b,y\n1,2,x\n", (), "dataset.target", "column 'y' of t.csv has 'x' on line 2"),
    ("a,b,y\n1,,3\n", ("dataset.features=[a,b]",), "dataset.features", "column 'b' of t.csv has '' on line 2"),
    ("a,b,y\n", (), "dataset.path", "only its header"),
    ("", (), "dataset.path", "header row"),
    ("name,y\nx,1\n", (), "dataset.features", "no numeric column besides dataset.target='y'"),
    ("a,b,y\n1,2\n", (), "dataset.path", "line 2 has 2 cells for 3 columns"),
    ("a,a,y\n1,2,3\n", (), "dataset.path", "'a' twice"),
    ("a,y\n1,2\n", ("dataset.features=[a,y]",), "dataset.features", "other than dataset.target"),
    ("a,y\n1,2\n", ("dataset.noise_std=0.1",), "dataset.noise_std", "null with dataset.path"),
    ("a,y\n1,2\n2,3\n", ("batch_size=3",), "batch_size", "at most the rows of dataset.path (2)"),
]


@pytest.mark.parametrize(("text", "overrides", "key", "says"), BAD, ids=[f"{b[2]}-{b[3][:24]}" for b in BAD])
def test_bad_data_is_refused_naming_its_key(
    make_cfg: MakeCfg, tmp_path: Path, text: str | None, overrides: tuple[str, ...], key: str, says: str
) -> None:
    if text is not None:
        (tmp_path / "t.csv").write_text(text)
    given = [o.format(tmp=tmp_path) for o in overrides]
    with pytest.raises(ConfigError) as refused:
        csv_cfg(make_cfg, tmp_path / "t.csv", *given)
    message = str(refused.value)
    assert message.startswith(f"{key}=") and says in message and "\n" not in message, message


def test_table_keys_are_refused_on_synthetic_data(make_cfg: MakeCfg) -> None:
    with pytest.raises(ConfigError, match=r"^dataset.target='y' is not allowed"):
        make_cfg("dataset.target=y")


def test_launcher_vectorized_refuses_a_wide_table_naming_its_features(make_cfg: MakeCfg, tmp_path: Path) -> None:
    from lrlab.sweep.launchers.support import unsupported

    path = table(tmp_path / "wide.csv", "a,b,c,d,e,y", "1,2,3,4,5,6", "2,1,0,1,2,3")
    assert (unsupported(csv_cfg(make_cfg, path)) or "").startswith("dataset.features: launcher=vectorized")
    assert unsupported(csv_cfg(make_cfg, path, "dataset.features=[a,b,c,d]")) is None
