"""The sweep: everything that talks to Hydra (composition, the callback, a job, groups, the summary, launchers)."""
