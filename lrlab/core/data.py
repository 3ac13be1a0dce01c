"""Step 1 (生成数据集) and step 2 (读取数据集): the data (synthetic, or a table's) and the minibatch readers.

Every reader yields (X, y) minibatches of shape (B, d) and (B, 1), ceil(n/B) of them an epoch, and draws
afresh each epoch; only the last minibatch may be shorter. Each visits every example exactly once per epoch
(a shuffle), except ``with_replacement``, which draws each of the epoch's n examples uniformly at random. A
reader is called once per epoch for its minibatches, or asked for the epoch's ``order``: the indices of the
examples in the order its minibatches would hold them (what an engine that gathers its own minibatches
reads). Either call advances the reader's shuffle by one epoch, the same way.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, cast

import torch
from torch.utils import data

from lrlab.core.table import Table

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Dataset:
    """Step 1's result: the data, and the parameters that generated it where there are any."""

    features: torch.Tensor  # (n, d) float32, on the CPU
    labels: torch.Tensor  # (n, 1)
    # Synthetic data's true_w (d,) and true_b; None for a table, whose least-squares fit stands in for them.
    true_w: tuple[float, ...] | None = None
    true_b: float | None = None


class Reader(Protocol):
    def __call__(self) -> Batches:
        """One epoch's minibatches."""
        ...

    def order(self) -> torch.Tensor:
        """One epoch's example indices (n,), int64, in the order ``__call__`` would yield them."""
        ...


def synthetic_data(
    true_w: torch.Tensor, true_b: float, num_examples: int, noise_std: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """生成 y = Xw + b + 噪声, the seed's ``synthetic_data`` with its noise_std and a seeded generator."""
    features = torch.normal(0.0, 1.0, (num_examples, len(true_w)), generator=generator)  # (n, d)
    labels = features @ true_w + true_b  # (n,)
    labels += torch.normal(0.0, noise_std, labels.shape, generator=generator) if noise_std > 0 else 0.0
    return features, labels.reshape((-1, 1))  # (n, d), (n, 1)


def table_data(table: Table) -> Dataset:
    """A table's rows as tensors: features (n, d) and labels (n, 1), float32 as the models are; no true parameters."""
    num_examples, dim = table.num_examples, len(table.features)
    features = torch.frombuffer(table.feature_values, dtype=torch.float64).reshape(num_examples, dim)
    labels = torch.frombuffer(table.labels, dtype=torch.float64).reshape(num_examples, 1)
    return Dataset(features.to(torch.float32), labels.to(torch.float32))  # copies: the table stays as it was read


class ShuffledIndexReader:
    """The seed's ``data_iter``: ``random.shuffle`` of a list of indices, gathered batch by batch."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> None:
        self.features, self.labels, self.batch_size = features, labels, batch_size
        self.rng = random.Random(seed)

    def _shuffled(self) -> list[int]:
        indices = list(range(len(self.features)))
        self.rng.shuffle(indices)  # 这些样本是随机读取的，没有特定的顺序
        return indices

    def __call__(self) -> Batches:
        indices, num_examples = self._shuffled(), len(self.features)
        for i in range(0, num_examples, self.batch_size):
            batch_indices = torch.tensor(indices[i : min(i + self.batch_size, num_examples)])
            yield self.features[batch_indices], self.labels[batch_indices]

    def order(self) -> torch.Tensor:
        return torch.tensor(self._shuffled())


class DataLoaderReader:
    """The seed's §3.3 ``load_array``: a shuffling ``DataLoader`` over a ``TensorDataset``."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.loader = data.DataLoader(
            data.TensorDataset(features, labels), batch_size, shuffle=True, generator=generator
        )
        # The same shuffle as indices: a loader of the same length on the same generator draws from it exactly
        # what ``self.loader`` draws for an epoch, as long as each epoch runs to its end (list() does).
        indices = cast("data.Dataset[int]", range(len(features)))  # a map-style dataset: __getitem__ and __len__
        self.indices: data.DataLoader[int] = data.DataLoader(indices, len(features), shuffle=True, generator=generator)

    def __call__(self) -> Batches:
        return iter(self.loader)

    def order(self) -> torch.Tensor:
        (order,) = list(self.indices)  # one minibatch of all n indices
        return order


class PermutationReader:
    """The default: one ``randperm`` gather per epoch, then contiguous slices (views, no per-batch gather)."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> None:
        self.features, self.labels, self.batch_size = features, labels, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self) -> Batches:
        perm = self.order().to(self.features.device)
        shuffled_x, shuffled_y = self.features[perm], self.labels[perm]
        for i in range(0, len(self.features), self.batch_size):
            yield shuffled_x[i : i + self.batch_size], shuffled_y[i : i + self.batch_size]

    def order(self) -> torch.Tensor:
        return torch.randperm(len(self.features), generator=self.generator)


class WithReplacementReader(PermutationReader):
    """Sampling with replacement: each epoch's n indices are drawn uniformly and independently (``randint``),
    then sliced into minibatches as ``PermutationReader`` slices its permutation. Each step's examples are
    independent draws, the setting in which ``theory.SgdTheory`` is exact (when batch_size divides n)."""

    def order(self) -> torch.Tensor:
        num_examples = len(self.features)
        return torch.randint(num_examples, (num_examples,), generator=self.generator)


READERS: dict[str, Callable[[torch.Tensor, torch.Tensor, int, int], Reader]] = {
    "permutation": PermutationReader,
    "shuffled_index": ShuffledIndexReader,
    "dataloader": DataLoaderReader,
    "with_replacement": WithReplacementReader,
}
