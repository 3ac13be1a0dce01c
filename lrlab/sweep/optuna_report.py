"""What an optimising sweep's parent run records of its study: the best value and its params as they improve, then
the optimisation history and the parameter importances, drawn by ``optuna.visualization.matplotlib``.

- metric ``best_value``, one point each time the best improves, at step = the best trial's number;
- tags ``lrlab.best_trial``, ``lrlab.best_value``, ``lrlab.best_run_id`` and ``lrlab.best.<key>`` (tags, since a
  param cannot change), and at the end the params ``best.<key>`` of the final best;
- artifacts ``optimization_history.png`` and ``param_importances.png`` (this one once two trials have finite values).

The best is the study's, over every trial with a finite value (a diverged trial's ``inf`` never is): a resumed
study's best may come from an earlier command's trial.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from lrlab.sweep.optuna_study import RUN_ATTR

if TYPE_CHECKING:
    import optuna
    from mlflow.tracking import MlflowClient


class BestRecord:
    """The parent run's record of the best trial so far."""

    def __init__(self, client: MlflowClient, parent_run_id: str, metric: str, direction: str) -> None:
        self.client, self.parent_run_id, self.metric, self.direction = client, parent_run_id, metric, direction
        self.best: optuna.trial.FrozenTrial | None = None

    def update(self, study: optuna.Study) -> None:
        """Log the best trial if it changed since the last call."""
        best = best_trial(study)
        if best is None or (self.best is not None and best.number == self.best.number):
            return
        self.best = best
        value = float(best.value)  # type: ignore[arg-type]
        self.client.log_metric(self.parent_run_id, "best_value", value, step=best.number, synchronous=True)
        tags = {
            "lrlab.best_trial": str(best.number),
            "lrlab.best_value": repr(value),
            "lrlab.best_run_id": str(best.user_attrs.get(RUN_ATTR, "")),
            **{f"lrlab.best.{key}": str(v) for key, v in best.params.items()},
        }
        for key, text in tags.items():
            self.client.set_tag(self.parent_run_id, key, text, synchronous=True)
        print(f"best so far: trial {best.number} ({_spelled(best.params)}): {self.metric} {value:.6g}", flush=True)

    def final(self) -> None:
        """The final best's params, once, as params of the parent."""
        if self.best is None:
            return
        for key, value in self.best.params.items():
            self.client.log_param(self.parent_run_id, f"best.{key}", str(value), synchronous=True)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's best COMPLETE trial with a finite value, or None."""
    from optuna.trial import TrialState

    finished = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    if not finished:
        return None
    pick = min if study.direction.name == "MINIMIZE" else max
    return pick(finished, key=lambda t: (t.value, -t.number))


def draw(study: optuna.Study, client: MlflowClient, parent_run_id: str, metric: str) -> None:
    """The optimisation history and the parameter importances, as artifacts of the parent."""
    import matplotlib

    matplotlib.use("Agg")  # the CLI's process: figures are saved, never shown
    from matplotlib import pyplot
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    figures: dict[str, Any] = {"optimization_history.png": lambda: plot_optimization_history(study, target_name=metric)}
    if sum(1 for t in study.get_trials(deepcopy=False) if t.value is not None and math.isfinite(t.value)) >= 2:
        figures["param_importances.png"] = lambda: plot_param_importances(study, target_name=metric)
    for name, plot in figures.items():
        try:
            axes = plot()
        except Exception as error:  # e.g. importances of a space no trial varied: say so, the sweep goes on
            print(f"no {name}: {type(error).__name__}: {error}", flush=True)
            continue
        try:
            client.log_figure(parent_run_id, axes.figure, name)
        finally:
            pyplot.close(axes.figure)


def _spelled(params: dict[str, Any]) -> str:
    spelled = (f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={value}" for key, value in params.items())
    return " ".join(spelled)
