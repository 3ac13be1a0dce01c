"""Launchers of lrlab's own: how a sweep's jobs run. Each is a module here, with its Hydra plugin class in
``hydra_plugins/`` and its options in ``conf/launcher/<name>.yaml`` and ``conf/hydra/launcher/<name>.yaml``."""
