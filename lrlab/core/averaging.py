"""The averaged model: the running mean, in float64, of a model's iterates from a given step on.

mean ← mean + (θ − mean)/k after the k-th iterate averaged; the compiled kernels repeat the same float64
operations, so that equal iterates give equal means whatever the engine.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from lrlab.core.models import LinReg


class Average:
    """The mean of ``net``'s iterates from step ``start`` on (None: nothing is averaged); θ = (w, b)."""

    def __init__(self, net: LinReg, start: int | None) -> None:
        first = next(net.parameters())
        self.start = -1 if start is None else start  # -1: the kernels' "never"
        self.mean = torch.zeros(sum(p.numel() for p in net.parameters()), dtype=torch.float64, device=first.device)
        self.count = np.zeros(1, np.int64)  # iterates averaged so far: an array, so a kernel can count them
        self.model = copy.deepcopy(net) if start is not None else None

    def add(self, step: int, net: LinReg) -> None:
        """Average the parameters after ``step`` (0-based over the whole training) if the window holds it."""
        if self.start < 0 or step < self.start:
            return
        self.count[0] += 1
        with torch.no_grad():
            theta = torch.cat([p.reshape(-1) for p in net.parameters()]).double()
            self.mean += (theta - self.mean) / int(self.count[0])

    def averaged(self) -> LinReg | None:
        """The averaged model (its parameters the mean rounded to the model's dtype); None before any iterate."""
        if self.model is None or self.count[0] == 0:
            return None
        with torch.no_grad():
            at = 0
            for param in self.model.parameters():
                param.copy_(self.mean[at : at + param.numel()].reshape(param.shape))
                at += param.numel()
        return self.model
