"""What ``launcher=vectorized`` trains exactly as the basic launcher would, and the one line that refuses the
rest. No torch here: the sweep's callback asks for every job before any run exists, and a refusal must not wait
for torch to load."""

from __future__ import annotations

from lrlab.core.config import Config, EngineName, OptimizerName

EXACT_FEATURES = 4  # engine=autograd: torch's CPU sgemm sums a forward pass over d <= 4 features in index order


def unsupported(cfg: Config) -> str | None:
    """Why ``launcher=vectorized`` cannot train this job as the basic launcher would (one line), or None."""
    engine = cfg.engine.name
    if engine is EngineName.compiled:
        return None  # the compiled engine's own kernel, member by member: whatever that engine runs
    if engine is not EngineName.autograd:
        return f"engine={engine.value}: launcher=vectorized trains engine=autograd or engine=compiled jobs only"
    if cfg.optimizer.name not in (OptimizerName.sgd_scratch, OptimizerName.sgd):
        return (
            f"optimizer={cfg.optimizer.name.value}: launcher=vectorized trains engine=autograd jobs with "
            "optimizer=sgd_scratch, sgd or momentum only (use engine=compiled, or launcher=basic)"
        )
    d = cfg.dataset.shape()[1]
    if d > EXACT_FEATURES:
        key = "dataset.true_w" if cfg.dataset.path is None else "dataset.features"
        return (
            f"{key}: launcher=vectorized trains engine=autograd jobs of at most {EXACT_FEATURES} features "
            f"(this one has {d}): torch sums a wider forward pass in another order, so the numbers would not be "
            "the basic launcher's (use engine=compiled, or launcher=basic)"
        )
    return None
