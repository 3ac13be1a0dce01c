"""The parts of Hydra that lrlab uses without a public API, in one place. Read against hydra-core 1.3.8;
``tests/unit/test_internals.py`` fails when an upgrade changes them.

- ``BasicSweeper``: Hydra's default sweeper, which ``hydra/sweeper=lrlab`` extends so that each job is
  composed once. Hydra ships it as a core plugin, not as an API. ``hydra_plugins/lrlab_sweeper`` names it
  directly: Hydra's plugin scan loads that module on its own, and a subclass of the name re-exported from
  here failed there (``TypeError`` from ``super()``); the test checks that both are one class.
- ``BASIC_LAUNCHER``: where the basic launcher's class lives, to tell its sweeps (jobs in this process).
- ``get_overrides_dirname``: how Hydra's config loader spells ``hydra.job.override_dirname``, which
  ``JobLoader`` must set as Hydra would.
"""

from __future__ import annotations

from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

READ_AGAINST = "1.3.8"
# hydra/launcher=basic's class, as Hydra's config names it: the launcher whose jobs run in this process.
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"

__all__ = ["BASIC_LAUNCHER", "READ_AGAINST", "BasicSweeper", "get_overrides_dirname"]
