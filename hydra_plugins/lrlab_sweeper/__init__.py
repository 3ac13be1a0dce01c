"""lrlab's sweeper, ``hydra/sweeper=lrlab`` (see ``lrlab_sweeper.py``)."""
