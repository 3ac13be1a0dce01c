"""Every option in conf/ composes; every bad value is refused naming its key."""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import pytest

from lrlab.core.config import Config, ConfigError, DeviceName, LossName, ModelName, OptimizerName
from lrlab.sweep.compose import options

GROUPS = ["dataset", "model", "loss", "optimizer", "reader", "device", "engine", "launcher"]
OPTIONS = [(group, option) for group in GROUPS for option in options(group)]


def test_defaults_are_the_seeds_section_3_2(make_cfg: Callable[..., Config]) -> None:
    cfg = make_cfg()
    assert (cfg.lr, cfg.batch_size, cfg.num_epochs, cfg.seed) == (0.03, 10, 3, 0)
    assert (cfg.dataset.true_w, cfg.dataset.true_b, cfg.dataset.num_examples, cfg.dataset.noise_std) == (
        [2.0, -3.4],
        4.2,
        1000,
        0.01,
    )
    assert (cfg.model.name, cfg.loss.name, cfg.optimizer.name) == (
        ModelName.scratch,
        LossName.squared,
        OptimizerName.sgd_scratch,
    )
    assert cfg.experiment_name == "lrlab" and cfg.tracking_uri is None


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(compose_cfg: Callable[..., object], group: str, option: str) -> None:
    if (group, option) in {("device", "cuda"), ("device", "mps")}:
        pytest.skip("composes only where the device exists; refusal is tested below")
    cfg = compose_cfg(f"{group}={option}", return_hydra_config=True)
    assert cfg.hydra.runtime.choices[group] == option  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("model", "loss", "optimizer"), list(product(["scratch", "linear"], ["squared", "mse"], ["sgd_scratch", "sgd"]))
)
def test_every_model_loss_optimizer_combination_validates(
    make_cfg: Callable[..., Config], model: str, loss: str, optimizer: str
) -> None:
    cfg = make_cfg(f"model={model}", f"loss={loss}", f"optimizer={optimizer}")
    assert cfg.model.name.value == model and cfg.loss.name.value == loss


def test_seeds_derive_from_seed_unless_given(make_cfg: Callable[..., Config]) -> None:
    cfg, other, given = make_cfg("seed=0"), make_cfg("seed=1"), make_cfg("seed=1", "data_seed=123")
    streams = [cfg.stream_seed(s) for s in ("data", "init", "shuffle")]
    assert len(set(streams)) == 3
    assert cfg.stream_seed("data") != other.stream_seed("data")
    assert given.stream_seed("data") == 123 and given.stream_seed("init") == other.stream_seed("init")


# Bad values: the one table is tests/e2e/test_reliability.py::BAD_INPUT, through the real CLI.


def test_cuda_is_refused_where_there_is_none(make_cfg: Callable[..., Config]) -> None:
    import torch

    if torch.cuda.is_available():
        assert make_cfg("device=cuda").device.resolve().type == "cuda"
    else:
        with pytest.raises(ConfigError, match="device"):
            make_cfg("device=cuda")
    assert make_cfg("device=auto").device.name is DeviceName.auto
