"""lrlab's ``launcher=ray``, ``launcher=slurm`` and ``launcher=submitit_local`` (see ``cluster_launchers.py``)."""
