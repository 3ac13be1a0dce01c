"""lrlab's ``launcher=vectorized`` as a Hydra launcher plugin (see ``vectorized_launcher.py``)."""
