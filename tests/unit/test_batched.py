"""lrlab.core.batched (launcher=vectorized): which jobs train together, and that a member's history is its own run's.

Every member of a group gets, bit for bit, the history the pipeline gives that job alone (on the CPU): the
tolerance here is equality; the e2e test holds the whole record to 1e-6 relative.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest

from lrlab.core.batched import group_key, train_together
from lrlab.core.config import Config
from lrlab.core.engines.results import Diverged, EpochResult, TrainResult
from lrlab.core.pipeline import run_pipeline

MakeCfg = Callable[..., Config]


def test_a_group_shares_data_and_order_and_differs_only_in_what_one_model_owns(make_cfg: MakeCfg) -> None:
    base = group_key(make_cfg("lr=0.03"))
    for own in ("lr=0.5", "model.init_std=0.2", "init_seed=7"):
        assert group_key(make_cfg(own)) == base, own
    assert group_key(make_cfg("optimizer=sgd", "optimizer.momentum=0.5")) == group_key(make_cfg("optimizer=momentum"))
    for shared in ("seed=1", "batch_size=20", "reader=shuffled_index", "data_seed=3"):
        assert group_key(make_cfg(shared)) != base, shared  # seed=1 derives other data and another shuffle
    pinned = ("data_seed=5", "shuffle_seed=6")  # then the seed only derives the init stream: one group
    assert group_key(make_cfg(*pinned, "seed=0")) == group_key(make_cfg(*pinned, "seed=1", "lr=0.1"))


def history_alone(cfg: Config) -> list[EpochResult]:
    history: list[EpochResult] = []
    with pytest.raises(Diverged) if cfg.lr >= 3 else contextlib.nullcontext():
        run_pipeline(cfg, history.append)
    return history


@pytest.mark.parametrize(
    ("common", "members"),
    [  # torch batched (engine=autograd): seeds with pinned data and shuffle, lr, momentum, init_std, a divergence
        (
            ("optimizer=sgd", "data_seed=5", "shuffle_seed=6", "dataset.num_examples=203"),
            (("seed=0",), ("seed=1", "lr=0.1", "optimizer.momentum=0.9"), ("model.init_std=0.5",), ("lr=3",)),
        ),
        # the compiled engine's kernel over each member (numba), with an optimizer only it trains here
        (("engine=compiled", "optimizer=adam", "dataset.num_examples=203"), (("lr=0.01",), ("lr=0.1",))),
        # a wide model (d = 20): the kernel's vectorised sums and its own end-of-epoch evaluation
        (
            ("engine=compiled", "dataset=wide", "dataset.num_examples=203", "optimizer=sgd"),
            (("lr=0.01",), ("lr=0.1", "optimizer.momentum=0.9")),
        ),
    ],
)
def test_every_member_gets_the_history_it_gets_alone(
    make_cfg: MakeCfg, common: tuple[str, ...], members: tuple[tuple[str, ...], ...]
) -> None:
    cfgs = [make_cfg(*common, *own) for own in members]
    together = train_together(cfgs)
    for i, cfg in enumerate(cfgs):
        assert together[i][0] == history_alone(cfg), members[i]
        assert isinstance(together[i][1], Diverged if cfg.lr >= 3 else TrainResult), members[i]
