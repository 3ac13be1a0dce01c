"""The ``compiled`` engine: the autograd engine's update, step for step, as one numba kernel over many steps.

float32, CPU only. The kernels repeat torch's arithmetic operation by operation (each one's docstring says whose
order it follows), so the histories equal autograd's bit for bit where that holds and agree to float32 round-off
elsewhere (docs/engines.md#how-close-to-autograd). ``tests/unit/test_engines.py`` holds them to it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, assert_never

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from lrlab.core.averaging import Average
from lrlab.core.config import Config, LossName
from lrlab.core.engines.results import EpochResult, Evaluate, Problem, Stopped, TrainResult, end_epoch, train_result
from lrlab.core.models import LinReg
from lrlab.core.optim import ScratchSGD, TorchUpdate, Update
from lrlab.core.progress import bar
from lrlab.core.schedules import averaging_start, factors
from lrlab.core.theory import Parameters

WORK_PER_CALL = 1 << 22  # multiply-adds per kernel call, at most: bounds how long a stop waits
SUM_LANES = 8  # Vectorized<float>::size() of torch's CPU sum kernel: 8 on x86-64, AVX-512 machines included
SCRATCH_SGD, SGD, ADAM = 0, 1, 2  # the kernel's update rules
WIDE_DIM = 5  # from here MKL's forward pass sums in another order anyway: the kernel takes the faster path
PREFETCH_AHEAD = 16  # examples: each step prefetches the row this many places on (shuffled rows wait on memory)
PREFETCH_MIN = 1 << 16  # floats of data (256 KiB) from which the rows are prefetched (smaller data stays cached)
EVAL_MAX_EXAMPLES = 32768  # torch sums more than this across threads, in another order than _torch_sum
EVAL_MAX_DIM = 3  # wider: MKL's forward pass and vector_norm sum in other orders
FLOAT32_MAX = float(np.finfo(np.float32).max)  # a float32 sum past this is inf
PROGRESS_BAR_MIN_EXAMPLES = 10**6  # epochs of at least this many examples get a progress bar (on a terminal)


def _jit(function: Callable[..., Any], fastmath: set[str] | bool = False) -> Any:
    """``numba.njit`` with IEEE float semantics (no fastmath unless asked, no zero-division checks), cached on disk
    (docs/engines.md#the-first-run-compiles); where no cache is writable, compiled afresh in each process."""
    try:
        return numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=fastmath)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True, error_model="numpy", fastmath=fastmath)(function)


def _jit_reassociated(function: Callable[..., Any]) -> Any:
    """``_jit`` that lets LLVM reorder sums and fuse multiply-adds, so that it vectorises a loop's reduction.

    Only these two freedoms (``reassoc``, ``contract``): infinities and NaNs keep IEEE semantics, so a
    diverging model is still seen. The order chosen is fixed in the compiled code: the same numbers on
    every run on one machine, within float32 round-off of torch's (which sums in its own order).
    """
    return _jit(function, {"reassoc", "contract"})


def _fma_typer(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """a·b + c rounded once (float32), as torch's vectorised ``add(alpha=)``, ``lerp`` and ``addcmul`` compute."""
    if not all(t == types.float32 for t in (a, b, c)):
        return None
    signature = types.float32(types.float32, types.float32, types.float32)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        f32 = ir.FloatType()
        fma = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
        return builder.call(fma, args)

    return signature, codegen


_fma: Any = intrinsic(_fma_typer)


def _prefetch_typer(typingctx: Any, array: Any, index: Any) -> Any:
    """A hint to the CPU to bring ``array[index]`` (1-d, contiguous) into its caches: no effect on any value."""
    if not (isinstance(array, types.Array) and array.ndim == 1 and isinstance(index, types.Integer)):
        return None
    signature = types.void(array, index)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        byte = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        prefetch = builder.module.declare_intrinsic(
            "llvm.prefetch", [byte], ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32])
        )
        address = builder.bitcast(builder.gep(data, [args[1]]), byte)
        builder.call(prefetch, [address, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])  # read, keep
        return context.get_dummy_value()

    return signature, codegen


_prefetch: Any = intrinsic(_prefetch_typer)


@_jit
def _row_sum(values: Any, start: int, stride: int, size: int, acc: Any) -> Any:
    """Σ values[start + stride·e] for e < size, in the order of torch's ``row_sum`` (aten SumKernel.cpp).

    Four interleaved partial sums over rows of four, cascaded through four levels of accumulators
    (``multi_row_sum``), then the leftover elements, then the partial sums. ``acc`` is scratch space (4, 4).
    """
    rows = size // 4
    if rows == 0:  # no row of four: the leftover elements alone (what the general path adds to zeros)
        total = np.float32(0)
        for e in range(size):
            total += values[start + stride * e]
        return total
    ceil_log2 = 1 if rows <= 2 else int(np.log2(rows - 1)) + 1
    level_power = max(4, ceil_log2 // 4)
    level_step = 1 << level_power
    level_mask = level_step - 1
    acc[:, :] = 0
    i = 0
    while i + level_step <= rows:
        for _ in range(level_step):
            for k in range(4):
                acc[0, k] += values[start + stride * (i * 4 + k)]
            i += 1
        for j in range(1, 4):
            for k in range(4):
                acc[j, k] += acc[j - 1, k]
                acc[j - 1, k] = 0
            if i & (level_mask << (j * level_power)) != 0:
                break
    while i < rows:
        for k in range(4):
            acc[0, k] += values[start + stride * (i * 4 + k)]
        i += 1
    for j in range(1, 4):
        for k in range(4):
            acc[0, k] += acc[j, k]
    total = acc[0, 0]
    for e in range(rows * 4, size):
        total += values[start + stride * e]
    for k in range(1, 4):
        total += acc[0, k]
    return total


@_jit
def _torch_sum(values: Any, size: int, acc: Any) -> Any:
    """Σ values[:size] (float32) in the order of torch's CPU sum over a contiguous dimension.

    Below one vector's worth it is ``row_sum``; otherwise each of the ``SUM_LANES`` lanes is a ``row_sum``
    over every ``SUM_LANES``-th element, the tail past the last whole vector is summed first, and the
    lanes are added to it in order (``vectorized_inner_sum``). A reduction torch splits across threads
    (more than 32768 elements) is summed in another order.
    """
    if size < SUM_LANES:
        return _row_sum(values, 0, 1, size, acc)
    vectors = size // SUM_LANES
    total = np.float32(0)
    for e in range(vectors * SUM_LANES, size):
        total += values[e]
    for lane in range(SUM_LANES):
        total += _row_sum(values, lane, SUM_LANES, vectors, acc)
    return total


@_jit
def _forward(features: Any, row: int, w: Any) -> Any:
    """features[row]·w summed in index order, as MKL sums the forward pass of up to 4 features."""
    y_hat = features[row, 0] * w[0]
    for j in range(1, features.shape[1]):
        y_hat = y_hat + features[row, j] * w[j]
    return y_hat


@_jit_reassociated
def _dot(x: Any, w: Any) -> Any:
    """x·w in the order LLVM's vectorised reduction sums it (a wide model's forward pass: not MKL's order)."""
    total = np.float32(0)
    for j in range(x.shape[0]):
        total += x[j] * w[j]
    return total


@_jit_reassociated
def _add_scaled(grad: Any, x: Any, r: Any) -> None:
    """grad += x·r, element by element, with fused multiply-adds (a wide model's Xᵀr, one row at a time)."""
    for j in range(x.shape[0]):
        grad[j] += x[j] * r


@_jit
def _steps(
    features: Any,  # (n, d) float32
    labels: Any,  # (n,) float32
    order: Any,  # (n,) int64: the epoch's example indices, in the reader's order
    begin: int,  # the first example of the first step (a multiple of batch_size)
    end: int,  # the steps cover the examples [begin, end) of the epoch
    batch_size: int,
    w: Any,  # (d,) float32: the model's weights, updated in place
    b: Any,  # (1,) float32: the model's bias, updated in place
    rule: int,  # SCRATCH_SGD, SGD or ADAM
    mse: bool,  # the loss is (ŷ−y)² (else ½(ŷ−y)²)
    hyper: Any,  # (5,) float64: lr, momentum, beta1, beta2, eps
    state: Any,  # (3, d+1) float32: the momentum buffer, or Adam's exp_avg and exp_avg_sq, for (w, b)
    count: Any,  # (1,) int64: the steps taken so far
    factors: Any,  # (steps of the epoch,) float64: the lr's factor at each step (lrlab/core/schedules.py)
    avg: Any,  # (d+1,) float64: the mean of the iterates averaged so far (lrlab/core/averaging.py)
    avg_count: Any,  # (1,) int64: how many
    avg_start: int,  # the first step (0-based, whole training) averaged; -1: none
) -> None:
    n, d = features.shape
    one, two = np.float32(1), np.float32(2)
    beta1, beta2 = hyper[2], hyper[3]
    momentum32, eps32 = np.float32(hyper[1]), np.float32(hyper[4])
    lerp_weight, beta2_32, one_minus_beta2 = np.float32(1 - beta1), np.float32(beta2), np.float32(1 - beta2)
    residual = np.empty(batch_size, np.float32)
    grad = np.empty(d + 1, np.float32)  # (w, b)
    acc = np.empty((4, 4), np.float32)
    wide = d >= WIDE_DIM
    flat = features.reshape(-1)
    ahead = PREFETCH_AHEAD if n * d >= PREFETCH_MIN else 0
    for i in range(begin, end, batch_size):
        size = min(batch_size, n - i)
        lr = hyper[0] * factors[i // batch_size]  # as the autograd engine computes it, in float64
        lr32 = np.float32(lr)
        # Forward and loss gradient. ScratchSGD backpropagates the minibatch's sum, torch.optim its mean,
        # whose gradient is 1/size; ½(ŷ−y)² passes on (u/2)·(2(ŷ−y)), MSELoss's backward 2(ŷ−y)·u.
        u = one if rule == SCRATCH_SGD else one / np.float32(size)
        for k in range(size):
            if ahead and i + k + ahead < order.shape[0]:  # the row PREFETCH_AHEAD examples on: cached when it comes
                later = order[i + k + ahead]
                for j in range(0, d, 16):  # each 64-byte line of the row
                    _prefetch(flat, later * d + j)
                _prefetch(labels, later)
            row = order[i + k]
            y_hat = _dot(features[row], w) if wide else _forward(features, row, w)
            diff = (y_hat + b[0]) - labels[row]
            residual[k] = (two * diff) * u if mse else (u / two) * (two * diff)
        # Backward: ∂/∂w = Xᵀr (in index order as MKL's sgemm, unless wide), ∂/∂b = Σr in torch's order.
        if wide:  # the minibatch's rows are in the caches now: read again, not gathered
            grad[:d] = 0
            for k in range(size):
                _add_scaled(grad, features[order[i + k]], residual[k])
        else:
            row = order[i]
            for j in range(d):
                grad[j] = features[row, j] * residual[0]
            for k in range(1, size):
                row = order[i + k]
                for j in range(d):
                    grad[j] = grad[j] + features[row, j] * residual[k]
        grad[d] = _torch_sum(residual, size, acc)
        # The update, element by element, as torch rounds it.
        count[0] += 1
        step_size, correction2 = np.float32(0), np.float32(1)
        if rule == ADAM:  # in float64 as torch.optim.Adam computes them in Python, then rounded to float32
            step = np.float64(count[0])
            step_size = np.float32(-(lr / (1 - beta1**step)))  # -lr / bias_correction1
            correction2 = np.float32((1 - beta2**step) ** 0.5)  # sqrt(bias_correction2)
        for j in range(d + 1):
            param = w[j] if j < d else b[0]
            g = grad[j]
            if rule == SCRATCH_SGD:  # param -= lr * param.grad / batch_size
                param = param - (lr32 * g) / np.float32(size)
            elif rule == SGD:  # [buf.mul_(momentum).add_(grad)]; param.add_(buf, alpha=-lr)
                if hyper[1] != 0:  # torch tests the momentum as given, not as float32
                    state[0, j] = g if count[0] == 1 else state[0, j] * momentum32 + g
                    g = state[0, j]
                param = _fma(g, -lr32, param)
            else:  # exp_avg.lerp_(grad, 1-β1); exp_avg_sq.mul_(β2).addcmul_(grad, grad, value=1-β2); addcdiv_
                m = state[1, j]
                small = lerp_weight < 0.5  # lerp's two formulas, for the weight below or above 1/2
                m = _fma(lerp_weight, g - m, m) if small else _fma(lerp_weight - one, g - m, g)
                v = _fma(one_minus_beta2 * g, g, state[2, j] * beta2_32)
                state[1, j], state[2, j] = m, v
                denom = np.sqrt(v) / correction2 + eps32
                param = param + (step_size * m) / denom
            if j < d:
                w[j] = param
            else:
                b[0] = param
        if avg_start >= 0 and count[0] > avg_start:  # the iterate after step count[0] - 1 is averaged
            avg_count[0] += 1
            for j in range(d + 1):
                param = w[j] if j < d else b[0]
                avg[j] = avg[j] + (np.float64(param) - avg[j]) / avg_count[0]


@_jit
def _evaluate(
    features: Any,  # (n, d) float32
    labels: Any,  # (n,) float32
    w: Any,  # (d,) float32
    b: Any,  # (1,) float32
    true_w: Any,  # (d,) float32
    true_b: Any,  # float32
    mse: bool,
    losses: Any,  # (n,) float32 scratch
    acc: Any,  # (4, 4) float32 scratch
) -> tuple[Any, Any, Any, bool]:
    """``end_epoch``'s numbers: the mean loss over the training set, ‖w − true_w‖₂, |b − true_b|, and whether w
    and b are finite, with torch's arithmetic (for the shapes ``EVAL_MAX_EXAMPLES``, ``EVAL_MAX_DIM`` allow)."""
    n, d = features.shape
    for i in range(n):  # the forward pass as in _steps; squared: (ŷ−y)**2 / 2, mse: (ŷ−y)**2
        diff = (_forward(features, i, w) + b[0]) - labels[i]
        losses[i] = diff * diff if mse else (diff * diff) / np.float32(2)
    mean = _torch_sum(losses, n, acc) / np.float32(n)  # torch's mean: the sum, then one division
    squares = np.float32(0)
    finite = np.isfinite(b[0])
    for j in range(d):
        error = w[j] - true_w[j]
        squares = _fma(error, error, squares)  # vector_norm accumulates in fused multiply-adds
        finite = finite and np.isfinite(w[j])
    return mean, np.sqrt(squares), abs(b[0] - true_b), finite


@_jit
def _evaluate_wide(
    features: Any, labels: Any, w: Any, b: Any, true_w: Any, true_b: Any, mse: bool, losses: Any, acc: Any
) -> tuple[Any, Any, Any, bool]:
    """``_evaluate``'s numbers for a wide model (d >= ``WIDE_DIM``), within float32 round-off of torch's.

    Each example's loss is torch's, but for the forward pass's order (``_dot``, as the wide steps sum it);
    the mean and the norm are summed in float64 and rounded once, so that they are as close to the exact
    values as torch's float32 sums or closer, at any n. Where torch's float32 sum overflows (a total past
    ``FLOAT32_MAX``, of finite losses) they are ``inf`` as torch's are: a divergence is seen at the same
    epoch for the same reason. ``losses`` and ``acc`` are not used.
    """
    n, d = features.shape
    total = 0.0
    for i in range(n):
        diff = (_dot(features[i], w) + b[0]) - labels[i]
        total += diff * diff if mse else (diff * diff) / np.float32(2)
    squares = 0.0
    finite = np.isfinite(b[0])
    for j in range(d):
        error = np.float64(w[j] - true_w[j])
        squares += error * error
        finite = finite and np.isfinite(w[j])
    mean = np.float32(np.inf) if total > FLOAT32_MAX else np.float32(total / n)
    norm = np.float32(np.inf) if squares > FLOAT32_MAX else np.float32(np.sqrt(squares))
    return mean, norm, abs(b[0] - true_b), finite


@_jit
def steps_of_group(
    features: Any,
    labels: Any,
    order: Any,
    begin: int,
    end: int,
    batch_size: int,
    w: Any,  # (K, d) float32: model m's weights in row m
    b: Any,  # (K, 1) float32
    rule: int,
    mse: bool,
    hyper: Any,  # (K, 5) float64
    state: Any,  # (K, 3, d + 1) float32
    count: Any,  # (K, 1) int64
    factors: Any,  # (steps of the epoch,) float64: the group's schedule
    avg: Any,  # (K, d + 1) float64
    avg_count: Any,  # (K, 1) int64
    avg_start: int,
    active: Any,  # (K,) bool: the models still training
) -> None:
    """``_steps`` for each active model of a group that shares the data and its order (launcher=vectorized,
    ``lrlab/core/batched.py``): every model gets this engine's arithmetic, so its numbers are this engine's."""
    for m in range(w.shape[0]):
        if active[m]:
            model = (w[m], b[m], rule, mse, hyper[m], state[m], count[m], factors, avg[m], avg_count[m], avg_start)
            _steps(features, labels, order, begin, end, batch_size, *model)


def update_rule(optimizer: Update) -> tuple[int, np.ndarray]:
    """The kernel's rule and hyperparameters (lr, momentum, beta1, beta2, eps), read off step 6's optimiser."""
    if isinstance(optimizer, ScratchSGD):
        return SCRATCH_SGD, np.array([optimizer.lr, 0, 0, 0, 0], np.float64)
    assert isinstance(optimizer, TorchUpdate)
    torch_optimizer, group = optimizer.optimizer, optimizer.optimizer.param_groups[0]
    extras = ("dampening", "nesterov", "weight_decay", "maximize", "amsgrad", "decoupled_weight_decay")
    if any(group.get(key) for key in extras):  # make_update sets none of these; the kernel has none of them
        raise NotImplementedError(f"the compiled engine has no kernel for {torch_optimizer!r}")
    if isinstance(torch_optimizer, torch.optim.SGD):
        return SGD, np.array([group["lr"], group["momentum"], 0, 0, 0], np.float64)
    if isinstance(torch_optimizer, torch.optim.Adam):
        beta1, beta2 = group["betas"]
        return ADAM, np.array([group["lr"], 0, beta1, beta2, group["eps"]], np.float64)
    raise NotImplementedError(f"the compiled engine has no kernel for {torch_optimizer!r}")


def is_mse(cfg: Config) -> bool:
    match cfg.loss.name:
        case LossName.squared:
            return False
        case LossName.mse:
            return True
        case _:
            assert_never(cfg.loss.name)


def evaluation(cfg: Config, features: torch.Tensor, labels: torch.Tensor, against: Parameters) -> Evaluate | None:
    """``end_epoch``'s evaluation of models of ``cfg``'s shape on this data, in a kernel where one applies; parameter
    errors against ``against`` (``Reference.against``: the true parameters, or the least-squares fit).

    ``_evaluate`` where it repeats torch's arithmetic (at most ``EVAL_MAX_EXAMPLES`` examples and
    ``EVAL_MAX_DIM`` features), ``_evaluate_wide`` for a wide model; in between (d = 4, or more examples),
    None: ``end_epoch`` evaluates with torch. The kernel is compiled, or loaded from the cache, here: not on
    the clock.
    """
    num_examples, dim = features.shape
    exact = num_examples <= EVAL_MAX_EXAMPLES and dim <= EVAL_MAX_DIM
    kernel = _evaluate if exact else _evaluate_wide if dim >= WIDE_DIM else None
    if kernel is None:
        return None
    features_np, labels_np = features.contiguous().numpy(), labels.reshape(-1).contiguous().numpy()
    true_w, true_b = np.array(against.w, np.float32), np.float32(against.b)
    mse = is_mse(cfg)
    scratch = (np.empty(num_examples if exact else 0, np.float32), np.empty((4, 4), np.float32))
    kernel(features_np[:1], labels_np[:1], true_w, np.zeros(1, np.float32), true_w, true_b, mse, *scratch)

    def evaluate(net: LinReg) -> tuple[float, float, float, bool]:
        w, b = (param.detach().numpy().reshape(-1) for param in net.parameters())
        loss_, w_error, b_error, finite = kernel(features_np, labels_np, w, b, true_w, true_b, mse, *scratch)
        return float(loss_), float(w_error), float(b_error), bool(finite)

    return evaluate


def train(problem: Problem) -> TrainResult:
    cfg, net, features, labels = problem.cfg, problem.net, problem.features, problem.labels
    num_examples, dim = features.shape
    features_np, labels_np = features.contiguous().numpy(), labels.reshape(-1).contiguous().numpy()
    # Views of the model's own parameters (scratch: w (d, 1), b; linear: weight (1, d), bias): the kernel
    # updates them in place, so that the model the epoch's evaluation runs is the one trained.
    w, b = (param.detach().numpy().reshape(-1) for param in net.parameters())
    rule, hyper = update_rule(problem.optimizer)
    mse = is_mse(cfg)
    state, count = np.zeros((3, dim + 1), np.float32), np.zeros(1, np.int64)
    span = cfg.batch_size * max(1, WORK_PER_CALL // (cfg.batch_size * (dim + 1)))  # examples per kernel call
    num_batches = -(-num_examples // cfg.batch_size)
    average = Average(net, averaging_start(cfg.averaging, num_batches * cfg.num_epochs))
    model = (cfg.batch_size, w, b, rule, mse, hyper, state, count)
    averaged = (average.mean.numpy(), average.count, average.start)
    args = (*model, factors(cfg.schedule, num_batches, cfg.num_epochs, 1), *averaged)
    _steps(features_np, labels_np, np.empty(0, np.int64), 0, 0, *args)  # compiles, or loads the cache: no steps
    evaluate = evaluation(cfg, features, labels, problem.ref.against)
    history: list[EpochResult] = []
    start = time.perf_counter()  # after the compile, which is a cost of the process, not of training
    for epoch in range(1, cfg.num_epochs + 1):
        args = (*model, factors(cfg.schedule, num_batches, cfg.num_epochs, epoch), *averaged)
        order = problem.reader.order().numpy()
        enabled = num_examples >= PROGRESS_BAR_MIN_EXAMPLES
        epoch_bar = bar(num_examples, f"epoch {epoch}", "ex", enabled=enabled, unit_scale=True)
        with epoch_bar as progress:  # closed, off the screen, before end_epoch prints the epoch's line
            for begin in range(0, num_examples, span):
                if problem.should_stop():
                    raise Stopped(epoch, history)
                end = min(begin + span, num_examples)
                _steps(features_np, labels_np, order, begin, end, *args)
                progress.update(end - begin)
        del order  # n int64: freed before the evaluation's temporaries
        end_epoch(problem, epoch, history, evaluate, average.averaged())
    return train_result(problem, history, time.perf_counter() - start)
