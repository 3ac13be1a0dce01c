"""The compiled engine against the autograd engine: same order, same numbers, same outcomes.

Every test runs both engines on the real pipeline (steps 1-7) and compares what ``on_epoch`` received.
The first compiled test in a process loads numba's cache of the kernel (or compiles it, a few seconds).

Tolerance of the compiled engine's history against the autograd engine's, per combination:

| dataset         | model          | loss        | optimizer                  | reader      | tolerance |
|-----------------|----------------|-------------|----------------------------|-------------|-----------|
| d = 2, n = 103  | scratch/linear | squared/mse | sgd_scratch, sgd, momentum | all four    | exact     |
| d = 2, n = 103  | scratch/linear | squared/mse | adam                       | all four    | ROUND_OFF |
| d = 20, n = 203 | scratch/linear | squared/mse | every optimizer            | permutation | ROUND_OFF |

The end-of-epoch evaluation (train_loss, w_error, b_error) runs in the kernel for n <= 32768 and d <= 3, and
equals ``end_epoch``'s torch evaluation bit for bit there (``test_the_kernel_evaluation_is_end_epochs``);
for d >= 5 (the d = 20 rows) it sums as the wide steps do, within ROUND_OFF of torch's
(``test_the_wide_evaluation_is_end_epochs_within_round_off``).

Exact: the kernel does torch's arithmetic operation by operation (see ``lrlab/core/engines/compiled.py``).
That holds where torch's CPU kernels sum these shapes in the order the kernel does: MKL's sgemm sums a
forward pass over d <= 4 features, and ``Xᵀr``, in index order. It was checked on x86-64 with MKL 2024.2
(torch 2.13.0+cpu); another BLAS or CPU may sum otherwise and then these rows fail, saying so.

ROUND_OFF: Adam's ``sqrt`` comes from MKL's vector math library in torch, which is off by one ulp now and
then against the kernel's correctly rounded one; MKL sums a forward pass over d >= 5 features in another
order than index order. One rounding differs in a step, by an ulp: SGD on a quadratic below lr_critical_gd
damps it while new ones arrive, so the parameters stay within a few ulps (seen: 4 ulps, 1.7e-6, of b ≈ 4.2).
So parameters, w_error and b_error agree within 1e-5 absolute (20 ulps of 4.2), and train_loss within
1e-4 relative (seen: 5e-6; near the optimum the loss moves with the square of the parameters' error).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import subprocess
import sys
import textwrap
from collections.abc import Callable
from itertools import product
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from lrlab.core.config import (
    Config,
    ConfigError,
    EngineConfig,
    EngineName,
    LossConfig,
    LossName,
    ModelConfig,
    ModelName,
    ReaderConfig,
    ReaderName,
)
from lrlab.core.engines import compiled
from lrlab.core.pipeline import (
    Diverged,
    EpochResult,
    Problem,
    Stopped,
    TrainResult,
    define_optimizer,
    read_dataset,
    run_pipeline,
)
from lrlab.record.provenance import config_hash, run_params
from lrlab.sweep.compose import job_config, to_config
from tests.conftest import CONF

ENGINES_NAMES = [engine.value for engine in EngineName]

MODELS, LOSSES = ["scratch", "linear"], ["squared", "mse"]
READERS = ["permutation", "shuffled_index", "dataloader", "with_replacement"]
OPTIMIZERS = ["sgd_scratch", "sgd", "momentum", "adam"]
EXACT_OPTIMIZERS = {"sgd_scratch", "sgd", "momentum"}
ROUND_OFF = {"train_loss_rtol": 1e-4, "atol": 1e-5}  # see the module docstring
WIDE_W = [2, -3.4, 1.5, 0.5, -1, 3, -2.5, 0.8, -0.3, 1.2, -1.7, 2.2, 0.1, -0.9, 1.8, -2, 0.6, -0.4, 2.7, -1.1]


@pytest.fixture(scope="module")
def composed() -> dict[str, Config]:
    """The real config of each optimizer option, composed once (80 ms each): tests vary copies of them.

    103 examples in minibatches of 10: the last of each epoch's 11 minibatches holds 3.
    """
    overrides = ["dataset.num_examples=103", "batch_size=10", "num_epochs=3"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return {
            o: to_config(compose(config_name="config", overrides=[f"optimizer={o}", *overrides])) for o in OPTIMIZERS
        }


def variant(
    cfg: Config,
    engine: str = "autograd",
    model: str | None = None,
    loss: str | None = None,
    reader: str | None = None,
    dataset: dict[str, Any] | None = None,
    **top: Any,
) -> Config:
    """A validated copy of ``cfg``: these options of model, loss and reader set only their group's name."""
    groups: dict[str, Any] = {"engine": EngineConfig(name=EngineName(engine))}
    if model:
        groups["model"] = ModelConfig(name=ModelName(model), init_std=cfg.model.init_std)
    if loss:
        groups["loss"] = LossConfig(name=LossName(loss))
    if reader:
        groups["reader"] = ReaderConfig(name=ReaderName(reader))
    if dataset:
        groups["dataset"] = dataclasses.replace(cfg.dataset, **dataset)
    return dataclasses.replace(cfg, **groups, **top)


def run(cfg: Config, should_stop: Callable[[], bool] = lambda: False) -> TrainResult:
    """Train ``cfg``: the result, whose history is what on_epoch received."""
    seen: list[EpochResult] = []
    result = run_pipeline(cfg, seen.append, should_stop=should_stop)
    assert result.history == seen
    return result


def assert_round_off(got: TrainResult, want: TrainResult) -> None:
    assert [r.epoch for r in got.history] == [r.epoch for r in want.history]
    loss = [[r.train_loss for r in result.history] for result in (got, want)]
    errors = [[(r.w_error, r.b_error) for r in result.history] for result in (got, want)]
    np.testing.assert_allclose(*loss, rtol=ROUND_OFF["train_loss_rtol"], atol=0)
    np.testing.assert_allclose(*errors, rtol=0, atol=ROUND_OFF["atol"])
    np.testing.assert_allclose([*got.w, got.b], [*want.w, want.b], rtol=0, atol=ROUND_OFF["atol"])


@pytest.mark.parametrize(
    ("model", "loss", "optimizer"),
    COMBINATIONS := list(product(MODELS, LOSSES, OPTIMIZERS)),
    ids=["-".join(c) for c in COMBINATIONS],
)
def test_compiled_matches_autograd_with_every_reader(
    composed: dict[str, Config], model: str, loss: str, optimizer: str
) -> None:
    for reader in READERS:
        want = run(variant(composed[optimizer], "autograd", model, loss, reader))
        got = run(variant(composed[optimizer], "compiled", model, loss, reader))
        if optimizer in EXACT_OPTIMIZERS:
            assert got.history == want.history, f"reader={reader}: the compiled engine's arithmetic differs here"
            assert (got.w, got.b) == (want.w, want.b)
        else:
            assert_round_off(got, want)
        assert got.device == want.device == "cpu"
        assert got.train_seconds > 0 and got.samples_per_second == 3 * 103 / got.train_seconds


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_compiled_matches_autograd_within_round_off_on_20_features(composed: dict[str, Config], optimizer: str) -> None:
    wide = {"true_w": WIDE_W, "num_examples": 203}
    for model, loss in product(MODELS, LOSSES):
        want = run(variant(composed[optimizer], "autograd", model, loss, dataset=wide))
        got = run(variant(composed[optimizer], "compiled", model, loss, dataset=wide))
        assert_round_off(got, want)


DIVERGING = [
    ("sgd_scratch", 2.2, 1e12),  # past the threshold in epoch 3
    ("momentum", 1.0, 1e12),  # in epoch 10
    ("sgd_scratch", 5.0, 1e300),  # float32 overflows first: inf and nan go through both the same way
]


def judged(cfg: Config, net: Any, loss: Any, features: torch.Tensor, labels: torch.Tensor, ref: Any) -> Problem:
    """The problem whose end of epoch evaluates ``net`` with ``loss`` on these data (steps 2 and 6 as in a run)."""
    return Problem(
        cfg, net, loss, define_optimizer(cfg, net), read_dataset(cfg, features, labels), features, labels, ref
    )


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_the_kernel_evaluation_is_end_epochs(composed: dict[str, Config], dim: int) -> None:
    """``compiled._evaluate`` gives ``end_epoch``'s numbers bit for bit, on every shape it is used for
    (n up to EVAL_MAX_EXAMPLES, short of and past each of torch's sum blocks), for both models and losses,
    and finds the same non-finite parameters."""
    from lrlab.core.engines.results import end_epoch
    from lrlab.core.losses import LOSSES as LOSS_FUNCTIONS
    from lrlab.core.models import MODELS as MODEL_CLASSES
    from lrlab.core.theory import reference

    assert (compiled.EVAL_MAX_DIM, compiled.EVAL_MAX_EXAMPLES) == (3, 32768)
    generator = torch.Generator().manual_seed(dim)
    for n, model, loss_name in product([1, 7, 8, 9, 37, 1000, 4097, 32768], MODELS, LOSSES):
        true_w = torch.randn(dim, generator=generator).tolist()
        cfg = variant(composed["sgd"], dataset={"true_w": true_w, "true_b": 4.2, "num_examples": max(n, 10)})
        features, labels = torch.randn(n, dim, generator=generator), torch.randn(n, 1, generator=generator) * 5
        ref = reference(features, labels, true_w, 4.2, loss_name, 0.03) if n >= dim else None
        for scale, poison in ((0.1, None), (3.0, None), (3.0, math.inf), (3.0, math.nan)):
            w, b = torch.randn(dim, 1, generator=generator) * scale, torch.randn(1, generator=generator) * scale
            if poison is not None:
                w[-1] = poison
            net = MODEL_CLASSES[model](w, b)
            got = compiled._evaluate(
                features.numpy(),
                labels.reshape(-1).numpy(),
                *(p.detach().numpy().reshape(-1) for p in net.parameters()),
                np.array(true_w, np.float32),
                np.float32(4.2),
                loss_name == "mse",
                np.empty(n, np.float32),
                np.empty((4, 4), np.float32),
            )
            history: list[EpochResult] = []
            if ref is not None:
                with pytest.raises(Diverged) if poison is not None else contextlib.nullcontext():
                    end_epoch(judged(cfg, net, LOSS_FUNCTIONS[loss_name], features, labels, ref), 1, history)
                want = history[0]
                assert [float(got[0]), float(got[1]), float(got[2])] == pytest.approx(
                    [want.train_loss, want.w_error, want.b_error], rel=0, abs=0, nan_ok=True
                ), (n, model, loss_name, scale, poison)
            assert bool(got[3]) is (poison is None)


def test_the_wide_evaluation_is_end_epochs_within_round_off(composed: dict[str, Config]) -> None:
    """``compiled.evaluation`` for d >= WIDE_DIM: ``end_epoch``'s numbers within ROUND_OFF, past torch's
    one-thread sums too; the same verdict, for the same reason, on non-finite parameters and on finite losses
    whose float32 sum overflows (torch's is inf there)."""
    from lrlab.core.engines.results import end_epoch
    from lrlab.core.losses import LOSSES as LOSS_FUNCTIONS
    from lrlab.core.models import MODELS as MODEL_CLASSES
    from lrlab.core.theory import reference

    generator = torch.Generator().manual_seed(5)
    shapes = [(203, compiled.WIDE_DIM), (203, 100), (40000, compiled.WIDE_DIM)]  # (n, d); 40000: past one thread's sum
    sum_overflows = 0  # cases of finite losses whose float32 sum is inf
    for (n, dim), model, loss_name in product(shapes, MODELS, LOSSES):
        true_w = torch.randn(dim, generator=generator).tolist()
        cfg = variant(composed["sgd"], loss=loss_name, dataset={"true_w": true_w, "true_b": 4.2, "num_examples": n})
        features, labels = torch.randn(n, dim, generator=generator), torch.randn(n, 1, generator=generator) * 5
        ref = reference(features, labels, true_w, 4.2, loss_name, 0.03)
        kernel = compiled.evaluation(cfg, features, labels, ref.against)
        assert kernel is not None
        for scale, poison in ((1.0, None), (1.0, math.inf), (1.0, math.nan), (1.5e18, None)):  # 1.5e18: losses ~1e37
            w, b = torch.randn(dim, 1, generator=generator) * scale, torch.randn(1, generator=generator)
            if poison is not None:
                w[-1] = poison
            net = MODEL_CLASSES[model](w, b)
            outcomes = []
            for evaluate in (kernel, None):  # the kernel's evaluation, torch's
                history: list[EpochResult] = []
                reason = ""
                try:
                    end_epoch(judged(cfg, net, LOSS_FUNCTIONS[loss_name], features, labels, ref), 1, history, evaluate)
                except Diverged as diverged:
                    reason = diverged.reason
                outcomes.append((history[0], reason))
            (got, got_reason), (want, want_reason) = outcomes
            assert got_reason == want_reason, (n, dim, model, loss_name, scale, poison)
            assert bool(want_reason) is not (scale == 1.0 and poison is None)
            if math.isfinite(want.train_loss):
                assert got.train_loss == pytest.approx(want.train_loss, rel=ROUND_OFF["train_loss_rtol"])
                assert [got.w_error, got.b_error] == pytest.approx([want.w_error, want.b_error], abs=ROUND_OFF["atol"])
            else:  # inf and nan as torch has them
                assert str(got.train_loss) == str(want.train_loss)
                with torch.no_grad():
                    sum_overflows += bool(torch.isfinite(LOSS_FUNCTIONS[loss_name](net(features), labels)).all())
    assert sum_overflows > 0


@pytest.mark.parametrize(("optimizer", "lr", "threshold"), DIVERGING)
def test_both_engines_diverge_at_the_same_epoch_for_the_same_reason(
    composed: dict[str, Config], optimizer: str, lr: float, threshold: float
) -> None:
    outcomes = []
    for engine in ENGINES_NAMES:
        cfg = variant(composed[optimizer], engine, dataset={"num_examples": 203}, lr=lr, num_epochs=20)
        with pytest.raises(Diverged) as diverged:
            run(dataclasses.replace(cfg, divergence_threshold=threshold))
        outcomes.append((diverged.value.epoch, diverged.value.reason, diverged.value.history))
    assert outcomes[0] == outcomes[1]
    assert 1 < outcomes[0][0] < 20
    if threshold > 1e38:
        assert outcomes[0][1] in ("train_loss is inf", "train_loss is nan", "a parameter is not finite")


def test_wide_divergence_is_found_at_the_same_epoch(composed: dict[str, Config]) -> None:
    epochs = []
    for engine in ENGINES_NAMES:
        cfg = variant(composed["sgd"], engine, loss="mse", dataset={"true_w": WIDE_W, "num_examples": 203}, lr=0.5)
        with pytest.raises(Diverged) as diverged:  # in epoch 2
            run(dataclasses.replace(cfg, num_epochs=20))
        epochs.append(diverged.value.epoch)
    assert epochs[0] == epochs[1] > 1


@pytest.mark.parametrize("engine", ENGINES_NAMES)
def test_a_stop_during_epoch_3_keeps_the_first_two_epochs(composed: dict[str, Config], engine: str) -> None:
    cfg = variant(composed["momentum"], engine, num_epochs=5)
    full = run(cfg)
    seen: list[EpochResult] = []
    calls = []

    def stop_after_two_epochs() -> bool:
        calls.append(len(seen))
        return len(seen) == 2

    with pytest.raises(Stopped) as stopped:
        run_pipeline(cfg, seen.append, should_stop=stop_after_two_epochs)
    assert stopped.value.epoch == 3 and stopped.value.history == full.history[:2] == seen
    assert len(calls) == (2 * 11 + 1 if engine == "autograd" else 3)  # before each step, or each kernel call


def test_the_compiled_engine_stops_between_kernel_calls_within_an_epoch(
    composed: dict[str, Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = variant(composed["adam"], "compiled")
    whole = run(cfg)
    monkeypatch.setattr(compiled, "WORK_PER_CALL", 2 * 10 * 3)  # 2 steps of 10 examples, d + 1 = 3, per call
    assert run(cfg).history == whole.history  # cutting an epoch into calls changes no arithmetic
    calls = 0

    def stop_on_call_9() -> bool:
        nonlocal calls
        calls += 1
        return calls == 9

    with pytest.raises(Stopped) as stopped:  # 6 calls an epoch (11 steps): call 9 is in epoch 2
        run(cfg, should_stop=stop_on_call_9)
    assert stopped.value.epoch == 2 and stopped.value.history == whole.history[:1]


def test_compiled_refuses_a_device_other_than_cpu_in_one_line(make_cfg: Callable[..., Config]) -> None:
    with pytest.raises(ConfigError) as refused:
        make_cfg("engine=compiled", "device=auto")
    message = str(refused.value)
    assert message.startswith("engine='compiled' is not allowed: ") and "device=auto" in message
    assert "\n" not in message
    if torch.cuda.is_available():  # refused for the engine; elsewhere the device itself is refused first
        with pytest.raises(ConfigError, match=r"^engine='compiled' is not allowed: .*device=cuda"):
            make_cfg("engine=compiled", "device=cuda")
    else:
        with pytest.raises(ConfigError, match=r"^device='cuda' is not allowed"):
            make_cfg("engine=compiled", "device=cuda")
    assert make_cfg("engine=compiled").engine.name is EngineName.compiled


def test_an_engine_name_that_disagrees_with_its_choice_is_refused(compose_cfg: Callable[..., DictConfig]) -> None:
    dcfg = compose_cfg("engine=compiled", "engine.name=autograd", return_hydra_config=True)
    with pytest.raises(ConfigError, match=r"^engine.name=autograd: the choice engine=compiled sets engine.name"):
        to_config(dcfg, dict(dcfg.hydra.runtime.choices))


def test_the_engine_is_logged_and_part_of_the_identity(compose_cfg: Callable[..., DictConfig]) -> None:
    logged, hashes = {}, {}
    for engine in ENGINES_NAMES:
        dcfg = compose_cfg(f"engine={engine}", return_hydra_config=True)
        choices = dict(dcfg.hydra.runtime.choices)
        params = run_params(job_config(dcfg), choices)
        logged[engine] = (params["engine"], params["engine.name"])
        hashes[engine] = config_hash(to_config(dcfg, choices))
    assert logged == {"autograd": ("autograd", "autograd"), "compiled": ("compiled", "compiled")}
    assert hashes["autograd"] != hashes["compiled"]
    assert "engine" not in to_config(compose_cfg()).identity()  # runs from before engines keep their hash


def test_a_default_run_does_not_import_numba() -> None:
    script = textwrap.dedent(
        """
        import sys
        from lrlab.core.config import *
        from lrlab.core.pipeline import run_pipeline
        groups = dict(dataset=DatasetConfig(num_examples=50), model=ModelConfig(), loss=LossConfig(),
                      optimizer=OptimizerConfig(), reader=ReaderConfig(), device=DeviceConfig())
        run_pipeline(Config(**groups, engine=EngineConfig(), num_epochs=1))
        assert "lrlab.core.engines.autograd" in sys.modules and "numba" not in sys.modules, sorted(sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
