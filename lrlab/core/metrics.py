"""The names of the metrics every epoch records, in a module without torch: the sweep's callback checks an
optimising sweep's metric against them before any run exists, on every command."""

from __future__ import annotations

EPOCH_METRICS = ("train_loss", "w_error", "b_error", "excess_loss")  # what every epoch records, by name
AVERAGED_METRICS = tuple(f"avg_{name}" for name in EPOCH_METRICS)  # and a run with averaging, of the averaged model
