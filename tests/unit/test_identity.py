"""What is logged is what ran: the command line beats a study, identity comes from the computation,
unknown keys and disagreeing names are refused. Real Hydra composition, no store."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from omegaconf import DictConfig

from lrlab.core.config import ConfigError
from lrlab.core.optim import make_update
from lrlab.record.provenance import config_hash
from lrlab.sweep.compose import CONF_DIR, NAMED_GROUPS, options, to_config
from lrlab.sweep.summary import loglog_slope
from tests.conftest import option_name

STUDIES = sorted(p.stem for p in (CONF_DIR.parent / "experiments").glob("*.yaml"))
GROUPS = [g for g in NAMED_GROUPS if g != "device"]  # device options exist only where the device does


def typed(compose_cfg: Callable[..., DictConfig], *overrides: str):  # type: ignore[no-untyped-def]
    cfg = compose_cfg(*overrides, return_hydra_config=True)
    return to_config(cfg, dict(cfg.hydra.runtime.choices)), cfg


@pytest.mark.parametrize("study", STUDIES)
@pytest.mark.parametrize("group", GROUPS)
def test_a_command_line_choice_beats_every_study(
    compose_cfg: Callable[..., DictConfig], study: str, group: str
) -> None:
    _, base = typed(compose_cfg, f"experiment={study}")
    chosen = base.hydra.runtime.choices[group]
    for option in options(group):
        if option == chosen:
            continue
        cfg, composed = typed(compose_cfg, f"experiment={study}", f"{group}={option}")
        assert composed.hydra.runtime.choices[group] == option
        name = getattr(cfg, group).name
        assert (name.value if hasattr(name, "value") else name) == option_name(group, option)


def test_studies_choose_options_through_their_defaults_list() -> None:
    for study in STUDIES:
        text = (CONF_DIR.parent / "experiments" / f"{study}.yaml").read_text()
        for group in NAMED_GROUPS:
            assert f"\n{group}:\n" not in text, f"{study} sets {group}'s fields: use `- override /{group}: ...`"


def test_a_group_whose_name_disagrees_with_its_choice_is_refused(compose_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigError, match=r"^loss.name=squared: the choice loss=mse sets loss.name"):
        typed(compose_cfg, "loss=mse", "loss.name=squared")


@pytest.mark.parametrize("key", ["+lrr=0.1", "+dataset.size=3", "++model.depth=2"])
def test_a_key_the_schema_does_not_have_is_refused_even_with_plus(
    compose_cfg: Callable[..., DictConfig], key: str
) -> None:
    name = key.lstrip("+").split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{name}: no such key"):
        typed(compose_cfg, key)


SAME = [
    (["optimizer=momentum"], ["optimizer=sgd", "optimizer.momentum=0.9"]),
    (["device=auto"], ["device=cpu"]),  # on a machine without a GPU; the hash holds the resolved device
    (["seed=0"], ["seed=7", "data_seed=249786412", "init_seed=271249057", "shuffle_seed=15823984"]),
    (["optimizer=sgd", "optimizer.betas=[0.5,0.5]"], ["optimizer=sgd"]),  # sgd ignores betas
    (["dataset=noisy", "dataset.noise_std=0.01"], ["dataset=synthetic"]),  # a label is not a computation
    (["experiment_name=a", "rerun=false", "orphan_timeout=5"], ["experiment_name=b"]),
]


@pytest.mark.parametrize(("one", "other"), SAME, ids=[" ".join(a) for a, _ in SAME])
def test_two_spellings_of_one_computation_hash_equal(
    compose_cfg: Callable[..., DictConfig], one: list[str], other: list[str]
) -> None:
    import torch

    if "device=auto" in one and (torch.cuda.is_available() or torch.backends.mps.is_available()):
        pytest.skip("auto resolves to a GPU here")
    assert config_hash(typed(compose_cfg, *one)[0]) == config_hash(typed(compose_cfg, *other)[0])


@pytest.mark.parametrize("change", ["lr=0.031", "seed=1", "reader=shuffled_index", "optimizer.momentum=0.8"])
def test_another_computation_hashes_differently(compose_cfg: Callable[..., DictConfig], change: str) -> None:
    base = ["optimizer=sgd"] if change.startswith("optimizer.") else []
    assert config_hash(typed(compose_cfg, *base)[0]) != config_hash(typed(compose_cfg, *base, change)[0])


def test_every_optimizer_dispatches_to_its_own_update(compose_cfg: Callable[..., DictConfig]) -> None:
    import torch

    kinds = {}
    for option in options("optimizer"):
        cfg, _ = typed(compose_cfg, f"optimizer={option}")
        update = make_update(cfg.optimizer, [torch.zeros(2, requires_grad=True)], 0.1)
        kinds[option] = type(getattr(update, "optimizer", update)).__name__
    assert kinds == {"adam": "Adam", "momentum": "SGD", "sgd": "SGD", "sgd_scratch": "ScratchSGD"}


def test_a_slope_needs_three_finished_sizes() -> None:
    assert loglog_slope([100, 1000], [0.1, 0.03]) is None
    assert loglog_slope([100, 1000, 1000], [0.1, 0.03, 0.03]) is None  # 2 distinct sizes
    assert loglog_slope([100, 1000, 10000], [0.1, float("inf"), 1.8e308]) is None  # diverged values drop out
    assert loglog_slope([100, 1000, 10000], [1.0, 0.1, 0.01]) == pytest.approx(-1.0)


JOBS = [
    ["lr=0.01", "seed=0"],
    ["lr=0.03", "seed=1"],  # differs only in plain values: derived from the first
    ["lr=1e-3", "seed=2", "dataset.true_w=[1.5,-2,0.5]", "dataset.num_examples=17"],
    ["optimizer=momentum", "optimizer.momentum=0.5", "lr=0.1"],  # another choice: composed
    ["optimizer=momentum", "optimizer.momentum=0.8", "lr=0.2"],
    ["experiment=lr_sweep", "lr=0.3", "seed=4"],  # a study, with its own defaults list
    ["experiment=lr_sweep", "lr=3.0", "seed=5"],
]


def test_a_job_derived_from_a_composed_sibling_equals_its_own_composition(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    """lrlab's loader composes once per set of jobs that differ in plain values; every job, Hydra's node
    included, equals what Hydra's own loader composes for it."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from lrlab.sweep.jobloader import JobLoader

    hydra_loader = GlobalHydra.instance().config_loader()
    master = hydra_loader.load_configuration("config", ["hydra.sweep.dir=sweeps/x"], RunMode.MULTIRUN)
    loader = JobLoader(hydra_loader)
    for overrides in JOBS:
        derived, composed = (
            loader.load_sweep_config(master, overrides),
            hydra_loader.load_sweep_config(master, overrides),
        )
        assert OmegaConf.to_container(derived) == OmegaConf.to_container(composed), overrides
        assert list(derived.hydra.overrides.task) == overrides
    assert len(loader._bases) == 4  # one compose per set of choices and keys set, for 7 jobs
    with pytest.raises(Exception, match="lr") as derived_error:  # a bad value: refused as Hydra refuses it
        loader.load_sweep_config(master, ["lr=abc", "seed=1"])
    with pytest.raises(Exception, match="lr") as composed_error:
        hydra_loader.load_sweep_config(master, ["lr=abc", "seed=1"])
    assert type(derived_error.value) is type(composed_error.value)
