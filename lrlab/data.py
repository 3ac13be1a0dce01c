"""Step 1 (生成数据集) and step 2 (读取数据集): the synthetic data and the minibatch readers.

Every reader yields (X, y) minibatches of shape (B, d) and (B, 1), reshuffles each epoch, and visits
every example exactly once per epoch; only the last minibatch may be shorter.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import torch
from torch.utils import data

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]
Reader = Callable[[], Batches]  # one call = one epoch's minibatches


def synthetic_data(
    true_w: torch.Tensor, true_b: float, num_examples: int, noise_std: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """生成 y = Xw + b + 噪声, the seed's ``synthetic_data`` with its noise_std and a seeded generator."""
    features = torch.normal(0.0, 1.0, (num_examples, len(true_w)), generator=generator)  # (n, d)
    labels = features @ true_w + true_b  # (n,)
    labels += torch.normal(0.0, noise_std, labels.shape, generator=generator) if noise_std > 0 else 0.0
    return features, labels.reshape((-1, 1))  # (n, d), (n, 1)


def shuffled_index_reader(features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> Reader:
    """The seed's ``data_iter``: ``random.shuffle`` of a list of indices, gathered batch by batch."""
    rng = random.Random(seed)
    num_examples = len(features)

    def epoch() -> Batches:
        indices = list(range(num_examples))
        rng.shuffle(indices)  # 这些样本是随机读取的，没有特定的顺序
        for i in range(0, num_examples, batch_size):
            batch_indices = torch.tensor(indices[i : min(i + batch_size, num_examples)])
            yield features[batch_indices], labels[batch_indices]

    return epoch


def dataloader_reader(features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> Reader:
    """The seed's §3.3 ``load_array``: a shuffling ``DataLoader`` over a ``TensorDataset``."""
    generator = torch.Generator().manual_seed(seed)
    loader = data.DataLoader(data.TensorDataset(features, labels), batch_size, shuffle=True, generator=generator)
    return lambda: iter(loader)


def permutation_reader(features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> Reader:
    """The default: one ``randperm`` gather per epoch, then contiguous slices (views, no per-batch gather)."""
    generator = torch.Generator().manual_seed(seed)
    num_examples = len(features)

    def epoch() -> Batches:
        perm = torch.randperm(num_examples, generator=generator).to(features.device)
        shuffled_x, shuffled_y = features[perm], labels[perm]
        for i in range(0, num_examples, batch_size):
            yield shuffled_x[i : i + batch_size], shuffled_y[i : i + batch_size]

    return epoch


READERS = {
    "permutation": permutation_reader,
    "shuffled_index": shuffled_index_reader,
    "dataloader": dataloader_reader,
}
