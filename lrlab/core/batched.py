"""Step 7 for a group of jobs at once (``launcher=vectorized``): K models that share their data and its order,
trained as one batched computation. Knows nothing of Hydra or MLflow.

A group's members share steps 1-2 (the data and its shuffle) and the kind of model, loss and optimiser; each
member owns what only its model sees (``MEMBER_FIELDS``). Step 1 and 2 run once; steps 3-5 once per member,
since every member keeps its own step-4 model for the per-epoch evaluation of its engine (``results.end_epoch``,
with ``compiled.evaluation``); step 7 updates all K models at once, each exactly as its own engine would:

- ``engine=autograd``: batched torch ops on the configured device, the parameters as columns of one (d+1, K)
  tensor. Each column gets, operation by operation, the arithmetic that ``lrlab/core/engines/compiled.py``
  documents for torch's autograd step on one model: the forward pass and ``Xᵀr`` summed in index order,
  the bias gradient in torch's own sum order, the update rounded as torch rounds it (``addcmul`` is torch's
  fused multiply-add of ``add_(alpha=-lr)``). On the CPU that is the basic launcher's history bit for bit
  for d <= 4 features. On a GPU (not checked) cuBLAS sums the one-model pass in its own order: expect
  float32 round-off differences there, not equality.
- ``engine=compiled``: the compiled engine's numba kernel for each member in turn (``steps_of_group``),
  so each member's numbers are the compiled engine's, for every combination it supports.

A member whose loss or parameters leave the bounds at the end of an epoch ends there (``Diverged``) and is
dropped from the batch; the others go on. A stop (``should_stop``, asked before every step) ends every
member still training with ``Stopped``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lrlab.core.averaging import Average
from lrlab.core.config import Config, EngineName, LossName, OptimizerName
from lrlab.core.engines.results import (
    Diverged,
    EpochResult,
    Evaluate,
    Problem,
    Stopped,
    TrainResult,
    end_epoch,
    train_result,
)
from lrlab.core.models import LinReg
from lrlab.core.pipeline import (
    closed_form,
    define_loss,
    define_model,
    define_optimizer,
    generate_dataset,
    init_model_params,
    plain_sgd,
    read_dataset,
    torch_threads,
)
from lrlab.core.schedules import averaging_start, factors
from lrlab.core.theory import Reference

# What may differ inside a group: what only one member's model sees. ``init_seed`` (or ``seed`` where
# data_seed and shuffle_seed are pinned) differs as the init stream. Everything else of ``Config.identity``
# is the group's: the data and its order, batch_size, num_epochs, the model, loss, optimizer, engine, device.
MEMBER_FIELDS = (
    "lr",
    "streams.init",
    "model.init_std",
    "optimizer.momentum",
    "optimizer.betas",
    "divergence_threshold",
)


@dataclass
class Member:
    """One job of a group: its config and where its training reports go (see ``runner.TrackedRun``)."""

    cfg: Config
    on_reference: Callable[[Reference], None]
    on_epoch: Callable[[EpochResult], None]
    on_end: Callable[[TrainResult | BaseException], None]  # called once: a result, Diverged, Stopped or an error
    history: list[EpochResult] = field(default_factory=list)


def group_key(cfg: Config) -> str:
    """What a job shares with every other member of its group: its identity without ``MEMBER_FIELDS``."""
    tree = cfg.identity()
    for dotted in MEMBER_FIELDS:
        *path, last = dotted.split(".")
        node = tree
        for key in path:
            node = node[key]
        node.pop(last, None)
    return json.dumps(tree, sort_keys=True)


def train_group(members: list[Member], should_stop: Callable[[], bool]) -> None:
    """Steps 1-7 for every member of one group (members share ``group_key``); each member's ``on_end`` once."""
    ended: set[int] = set()

    def end(index: int, outcome: TrainResult | BaseException) -> None:
        ended.add(index)
        members[index].on_end(outcome)

    try:
        with torch_threads(members[0].cfg.threads):  # threads is the group's: part of its identity
            _train(members, should_stop, end)
    except BaseException as error:  # a crash, or a forced interrupt: every member still training records it
        for index in range(len(members)):
            if index not in ended:
                end(index, error)


def train_together(cfgs: list[Config]) -> list[tuple[list[EpochResult], TrainResult | BaseException]]:
    """Train ``cfgs`` (one group) untracked: each member's history and outcome, in the order of ``cfgs``."""
    outcomes: dict[int, TrainResult | BaseException] = {}

    def on_end(index: int) -> Callable[[TrainResult | BaseException], None]:
        return lambda outcome: outcomes.__setitem__(index, outcome)

    members = [Member(cfg, lambda _: None, lambda _: None, on_end(i)) for i, cfg in enumerate(cfgs)]
    train_group(members, lambda: False)
    return [(member.history, outcomes[i]) for i, member in enumerate(members)]


def _train(
    members: list[Member],
    should_stop: Callable[[], bool],
    end: Callable[[int, TrainResult | BaseException], None],
) -> None:
    first = members[0].cfg
    device = first.device.resolve()
    data = generate_dataset(first)  # 1: shared, on the CPU as for one job
    # Prepared once (with SGD's theory if a member runs plain SGD); each member's as reference() has it for one run.
    ref = closed_form(next((m.cfg for m in members if plain_sgd(m.cfg)), first), data)
    refs = [ref.at(m.cfg.lr, plain_sgd(m.cfg)) for m in members]
    for member, member_ref in zip(members, refs, strict=True):
        member.on_reference(member_ref)
    features, labels = data.features.to(device), data.labels.to(device)
    reader = read_dataset(first, features, labels)  # 2: shared
    d = features.shape[1]
    nets = [define_model(m.cfg, *init_model_params(m.cfg, d), device) for m in members]  # 3-4: one model each
    loss = define_loss(first)  # 5
    problems = [  # 6: each member's problem, as it would train alone; the group's steps train them together
        Problem(m.cfg, net, loss, define_optimizer(m.cfg, net), reader, features, labels, member_ref, m.on_epoch)
        for m, net, member_ref in zip(members, nets, refs, strict=True)
    ]
    steps_per_epoch = -(-len(features) // first.batch_size)
    start_averaging = averaging_start(first.averaging, steps_per_epoch * first.num_epochs)  # the group's
    averages = [Average(net, start_averaging) for net in nets]
    group = _Group(members, problems, averages, end)
    if first.engine.name is EngineName.autograd:
        steps = _torch_steps(members, nets, averages, device, d)
    else:
        steps = _numba_steps(members, problems, averages)
    group.set_params, group.evaluate = steps.set_params, steps.evaluate
    start = time.perf_counter()
    for epoch in range(1, first.num_epochs + 1):
        lr_factors = factors(first.schedule, steps_per_epoch, first.num_epochs, epoch)  # the group's schedule
        steps.epoch(features, labels, reader.order(), lr_factors, group, should_stop, epoch)
        if not group.active:  # stopped
            return
        group.end_epoch(epoch)
        if not group.active:
            return
    seconds = time.perf_counter() - start
    for index in list(group.active):
        end(index, train_result(problems[index], members[index].history, seconds))


class _Group:
    """The members still training, and the end of an epoch for each of them."""

    def __init__(
        self,
        members: list[Member],
        problems: list[Problem],
        averages: list[Average],
        end: Callable[[int, TrainResult | BaseException], None],
    ) -> None:
        self.members, self.problems, self.averages, self.end = members, problems, averages, end
        self.active = list(range(len(members)))
        self.set_params: Callable[[int], None] = lambda index: None  # see _Steps
        self.evaluate: Evaluate | None = None  # see _Steps

    def stop(self, epoch: int) -> None:
        for index in self.active:
            self.end(index, Stopped(epoch, self.members[index].history))
        self.active = []

    def end_epoch(self, epoch: int) -> None:
        still = []
        for index in self.active:
            problem = self.problems[index]
            self.set_params(index)
            averaged = self.averages[index].averaged()
            try:
                end_epoch(problem, epoch, self.members[index].history, self.evaluate, averaged)
            except Diverged as error:  # this member ends here, frozen; the others go on
                self.end(index, error)
                continue
            still.append(index)
        self.active = still


@dataclass
class _Steps:
    """How a group's models train: ``epoch`` runs one epoch of steps over the active members (or stops them
    all at a stop); ``set_params`` copies member ``index``'s parameters into its step-4 model, and its mean
    of the iterates into its ``Average``; ``evaluate``
    is the engine's own evaluation of a model at the end of an epoch, as for one run (None: torch's)."""

    epoch: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray, _Group, Callable[[], bool], int], None]
    set_params: Callable[[int], None]
    evaluate: Evaluate | None = None


def _torch_steps(
    members: list[Member], nets: list[LinReg], averages: list[Average], device: torch.device, d: int
) -> _Steps:
    """engine=autograd: one epoch of steps over the active columns of the (d+1, K) parameters (d features)."""
    cfg = members[0].cfg
    columns = [torch.cat([p.detach().reshape(-1) for p in net.parameters()]) for net in nets]
    params = torch.stack(columns, dim=1)  # (d+1, K): rows w_0..w_{d-1}, b
    lr = torch.tensor([[m.cfg.lr for m in members]], dtype=torch.float64, device=device)  # (1, K)
    momentum = torch.tensor([[np.float32(m.cfg.optimizer.momentum) for m in members]], device=device)
    has_momentum = torch.tensor([[m.cfg.optimizer.momentum != 0 for m in members]], device=device)
    scratch = cfg.optimizer.name is OptimizerName.sgd_scratch
    mse = cfg.loss.name is LossName.mse
    state: dict[str, Any] = {"buffer": None, "count": 0, "averaged": 0}
    means = torch.zeros(d + 1, len(members), dtype=torch.float64, device=device)  # each column's Average
    start_averaging = averages[0].start  # the group's: -1, none

    def set_params(index: int) -> None:
        w, b = nets[index].parameters()
        with torch.no_grad():
            w.copy_(params[:d, index].reshape(w.shape))
            b.copy_(params[d, index].reshape(b.shape))
            averages[index].mean.copy_(means[:, index])
        averages[index].count[0] = state["averaged"]

    def epoch(
        features: torch.Tensor,
        labels: torch.Tensor,
        order: torch.Tensor,
        lr_factors: np.ndarray,
        group: _Group,
        should_stop: Callable[[], bool],
        epoch: int,
    ) -> None:
        active = group.active
        cols = torch.tensor(active, device=device)
        p = params[:, cols]  # (d+1, k) the active members' parameters
        mean = means[:, cols]
        base_lr = lr[:, cols]
        mom, has_mom = momentum[:, cols], has_momentum[:, cols]
        buffer = state["buffer"][:, cols] if state["buffer"] is not None else None
        order = order.to(device)
        shuffled_x, shuffled_y = features[order], labels[order]  # (n, d), (n, 1)
        n = len(features)
        for i in range(0, n, cfg.batch_size):
            if should_stop():
                params[:, cols] = p
                group.stop(epoch)
                return
            scale = (base_lr * float(lr_factors[i // cfg.batch_size])).float()  # the step's lr, as torch rounds it
            neg_lr = -scale
            X, y = shuffled_x[i : i + cfg.batch_size], shuffled_y[i : i + cfg.batch_size]  # (B, d), (B, 1)
            size = len(X)
            # The loss gradient per example, as autograd composes it: ScratchSGD backpropagates the sum
            # (u = 1), torch.optim the mean (u = 1/B); ½(ŷ−y)² passes on (u/2)·(2(ŷ−y)), MSELoss 2(ŷ−y)·u.
            u = np.float32(1) if scratch else np.float32(1) / np.float32(size)
            y_hat = X[:, 0:1] * p[0:1]  # (B, k), summed over features in index order
            for j in range(1, d):
                y_hat = y_hat + X[:, j : j + 1] * p[j : j + 1]
            diff = (y_hat + p[d : d + 1]) - y
            residual = (diff * 2) * float(u) if mse else (diff * 2) * float(u / np.float32(2))
            products = X.T[:, None, :] * residual.T[None, :, :]  # (d, k, B): x_ej · r_e
            grad_w = products[..., 0].clone()
            for e in range(1, size):  # Xᵀr in index order
                grad_w += products[..., e]
            grad_b = residual.T.contiguous().sum(1)  # (k,): each column in torch's sum order
            grad = torch.cat([grad_w, grad_b[None, :]])  # (d+1, k)
            state["count"] += 1
            if scratch:  # param -= lr * param.grad / batch_size
                p = p - (scale * grad) / size
            else:  # [buf.mul_(momentum).add_(grad)]; param.add_(buf, alpha=-lr), a fused multiply-add
                buffer = grad.clone() if state["count"] == 1 or buffer is None else buffer * mom + grad
                p = torch.addcmul(p, torch.where(has_mom, buffer, grad), neg_lr.expand_as(p))
            if 0 <= start_averaging < state["count"]:  # Average.add's arithmetic, column by column
                state["averaged"] += 1
                mean = mean + (p.double() - mean) / state["averaged"]
        params[:, cols] = p
        means[:, cols] = mean
        if buffer is not None:
            if state["buffer"] is None:
                state["buffer"] = torch.zeros_like(params)
            state["buffer"][:, cols] = buffer

    return _Steps(epoch, set_params)


def _numba_steps(members: list[Member], problems: list[Problem], averages: list[Average]) -> _Steps:
    """engine=compiled: the compiled engine's kernel over each active member, at most an epoch a call."""
    from lrlab.core.engines import compiled

    cfg = members[0].cfg
    d = problems[0].features.shape[1]
    nets = [problem.net for problem in problems]
    rules = [compiled.update_rule(problem.optimizer) for problem in problems]
    rule = rules[0][0]
    hyper = np.stack([h for _, h in rules])  # (K, 5)
    weights = np.stack(
        [np.concatenate([p.detach().cpu().numpy().reshape(-1) for p in net.parameters()]) for net in nets]
    )
    w, b = np.ascontiguousarray(weights[:, :d]), np.ascontiguousarray(weights[:, d:])  # (K, d), (K, 1)
    state, count = np.zeros((len(members), 3, d + 1), np.float32), np.zeros((len(members), 1), np.int64)
    mse = compiled.is_mse(cfg)
    means, averaged = np.zeros((len(members), d + 1)), np.zeros((len(members), 1), np.int64)
    compiled_once: list[bool] = []

    def set_params(index: int) -> None:
        wp, bp = nets[index].parameters()
        with torch.no_grad():
            wp.copy_(torch.from_numpy(w[index]).reshape(wp.shape))
            bp.copy_(torch.from_numpy(b[index]).reshape(bp.shape))
            averages[index].mean.copy_(torch.from_numpy(means[index]))
        averages[index].count[0] = averaged[index, 0]

    def epoch(
        features: torch.Tensor,
        labels: torch.Tensor,
        order: torch.Tensor,
        lr_factors: np.ndarray,
        group: _Group,
        should_stop: Callable[[], bool],
        epoch: int,
    ) -> None:
        active = group.active
        features_np, labels_np = features.contiguous().numpy(), labels.reshape(-1).contiguous().numpy()
        mask = np.zeros(len(members), np.bool_)
        mask[active] = True
        model = (cfg.batch_size, w, b, rule, mse, hyper, state, count)
        args = (*model, lr_factors, means, averaged, averages[0].start, mask)
        if not compiled_once:  # compiles, or loads numba's cache: no steps
            compiled.steps_of_group(features_np, labels_np, np.empty(0, np.int64), 0, 0, *args)
            compiled_once.append(True)
        span = cfg.batch_size * max(1, compiled.WORK_PER_CALL // (cfg.batch_size * (d + 1) * len(active)))
        order_np = order.numpy()
        n = len(features_np)
        for begin in range(0, n, span):
            if should_stop():
                group.stop(epoch)
                return
            compiled.steps_of_group(features_np, labels_np, order_np, begin, min(begin + span, n), *args)

    shared = problems[0]  # the group's data, and what its errors are measured against
    return _Steps(epoch, set_params, compiled.evaluation(cfg, shared.features, shared.labels, shared.ref.against))
