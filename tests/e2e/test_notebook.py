"""docs/quickstart.ipynb runs top to bottom on a fresh kernel, and what it tracked is in its store."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from mlflow.tracking import MlflowClient
from nbclient import NotebookClient

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def test_quickstart_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the notebook's default: ./mlflow.db
    notebook = nbformat.read(REPO / "docs" / "quickstart.ipynb", as_version=4)
    where = {"metadata": {"path": str(tmp_path)}}  # the kernel's working folder
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources=where).execute()
    printed = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "epoch 3, loss 0.000054" in printed and "refused: lr=-1.0 is not allowed" in printed
    assert any(o.get("output_type") == "display_data" for cell in notebook.cells for o in cell.get("outputs", []))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quickstart")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.params["lr"] for r in runs) == ["0.01", "0.03", "0.1"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert os.path.isdir(tmp_path / "mlflow-artifacts")
