"""lrlab's optimising sweeper, ``hydra/sweeper=optuna`` (see ``optuna_sweeper.py``)."""
