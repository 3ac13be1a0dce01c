"""Every reader draws afresh each epoch; all but ``with_replacement`` visit every example exactly once an epoch,
which draws each of an epoch's n examples uniformly with replacement."""

from __future__ import annotations

import pytest
import torch

from lrlab.core.data import READERS

SHUFFLES = sorted(set(READERS) - {"with_replacement"})


@pytest.mark.parametrize("name", SHUFFLES)
@pytest.mark.parametrize("batch_size", [1, 7, 10, 23])
def test_reader_visits_every_example_once_per_epoch(name: str, batch_size: int) -> None:
    n = 23
    features = torch.arange(n, dtype=torch.float32).reshape(n, 1)
    labels = -features
    reader = READERS[name](features, labels, batch_size, seed=3)
    orders = []
    for _ in range(3):
        batches = list(reader())
        assert all(len(X) == batch_size for X, _ in batches[:-1]) and 0 < len(batches[-1][0]) <= batch_size
        seen = torch.cat([X for X, _ in batches]).reshape(-1)
        assert torch.equal(torch.cat([y for _, y in batches]).reshape(-1), -seen)  # pairs stay together
        assert sorted(seen.tolist()) == list(range(n))
        orders.append(seen.tolist())
    if batch_size < n:
        assert orders[0] != orders[1]  # a fresh shuffle every epoch


@pytest.mark.parametrize("name", sorted(READERS))
def test_reader_is_reproducible_from_its_seed(name: str) -> None:
    features = torch.arange(40, dtype=torch.float32).reshape(40, 1)
    first = [X.tolist() for X, _ in READERS[name](features, features, 8, seed=5)()]
    again = [X.tolist() for X, _ in READERS[name](features, features, 8, seed=5)()]
    assert first == again


@pytest.mark.parametrize("name", sorted(READERS))
@pytest.mark.parametrize("batch_size", [1, 7, 23])
def test_reader_order_is_the_order_of_its_minibatches(name: str, batch_size: int) -> None:
    n = 23
    features = torch.arange(n, dtype=torch.float32).reshape(n, 1)
    one, other = (READERS[name](features, -features, batch_size, seed=3) for _ in range(2))
    for epoch in range(4):  # either call advances the shuffle by one epoch: alternate them
        batches, order = (one, other) if epoch % 2 else (other, one)
        seen = torch.cat([X for X, _ in batches()]).reshape(-1)
        indices = order.order()
        assert indices.dtype == torch.int64 and torch.equal(seen, features[indices].reshape(-1))


@pytest.mark.parametrize("batch_size", [1, 7, 10, 23])
def test_with_replacement_draws_n_uniform_examples_an_epoch(batch_size: int) -> None:
    n, epochs = 23, 400
    features = torch.arange(n, dtype=torch.float32).reshape(n, 1)
    reader = READERS["with_replacement"](features, -features, batch_size, seed=3)
    counts = torch.zeros(n)
    repeats = 0
    for _ in range(epochs):
        batches = list(reader())
        assert len(batches) == -(-n // batch_size)  # ceil(n/b) steps, as every reader
        assert all(len(X) == batch_size for X, _ in batches[:-1]) and 0 < len(batches[-1][0]) <= batch_size
        seen = torch.cat([X for X, _ in batches]).reshape(-1)
        assert torch.equal(torch.cat([y for _, y in batches]).reshape(-1), -seen)  # pairs stay together
        counts += torch.bincount(seen.long(), minlength=n)
        repeats += len(seen) - len(set(seen.tolist()))
    assert counts.sum() == n * epochs and repeats > 0  # n draws an epoch, some of them repeated
    # Uniform: each example's count is Binomial(n·epochs, 1/n), mean 400, sd 19.6; 5 sd either way.
    assert counts.min() > epochs - 5 * 19.6 and counts.max() < epochs + 5 * 19.6
