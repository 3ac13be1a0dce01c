"""The Hydra side of ``launcher=ray``, ``slurm`` and ``submitit_local``: Hydra's Ray and submitit launchers, with what
lrlab adds in ``lrlab/sweep/launchers/cluster.py``. Hydra instantiates launchers only from the ``hydra_plugins``
package, hence this shim. Hydra imports it for every command: it imports neither Ray nor submitit nor lrlab until a
sweep launches."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as _PluginRayLauncher
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher as _PluginLocalLauncher
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _PluginSlurmLauncher


class RayLauncher(_PluginRayLauncher):
    """``launcher=ray``: each job a Ray task, on a local Ray (127.0.0.1) or an existing cluster."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from lrlab.sweep.launchers.cluster import launch_on_ray

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        return launch_on_ray(
            self.ray_cfg, self.hydra_context, self.config, self.task_function, job_overrides, initial_job_idx
        )


class _Submitit:
    """What lrlab adds to Hydra's submitit launchers: the job's environment travels with the pickled
    launcher (submitit runs ``launcher(...)`` on the node), and every job ends before a lost one is told."""

    cluster: str  # submitit's executor: ``local`` or ``slurm``

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from lrlab.sweep.launchers.cluster import launch_on_submitit

        return launch_on_submitit(self, self.cluster, job_overrides, initial_job_idx)


class SubmititLocalLauncher(_Submitit, _PluginLocalLauncher):
    """``launcher=submitit_local``: submitit's local executor, one process per job on this machine."""

    cluster = "local"


class SlurmLauncher(_Submitit, _PluginSlurmLauncher):
    """``launcher=slurm``: one Slurm job per lrlab job (a job array), through submitit."""

    cluster = "slurm"
