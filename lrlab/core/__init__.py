"""The math: the seven steps, data, models, losses, optimisers, theory and engines. torch, numpy and numba only:
never Hydra, OmegaConf or MLflow (import-linter checks it)."""
