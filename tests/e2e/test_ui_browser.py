"""The MLflow UI in a real browser: the canonical sweep, served by `mlflow server`, compared in headless Chromium.

Needs Debian's chromium at /usr/bin/chromium (.ci/run installs it) and the playwright package (a dev dependency);
without either the module is skipped with the reason. Run it alone with `pytest -m e2e tests/e2e/test_ui_browser.py`.
Set LRLAB_SCREENSHOT_DIR to copy the screenshots there: docs/ui-compare.png (the compare page) and
docs/ui-experiment.png (the experiment's runs in the training view's chart mode) are made this way.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium chromium-driver)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PARENT = "sweep lr=0.01,0.03,0.1"
CHILDREN = ("lr=0.01", "lr=0.03", "lr=0.1")
SERVER_START_TIMEOUT_S = 60
UI_TIMEOUT_MS = 30_000
COMPARE_SCREENSHOT = "ui-compare.png"
EXPERIMENT_SCREENSHOT = "ui-experiment.png"
# The experiment sidebar's entries in MLflow 3.17.2: the GenAI view's own, and the training view's.
GENAI_ONLY_TABS = ("Overview", "Sessions", "Judges", "Review", "Evaluation runs", "Prompts", "Agent versions")
TRAINING_TABS = ("Runs", "Models")


@dataclass(frozen=True)
class Sweep:
    tracking_uri: str
    experiment_id: str
    parent_id: str
    child_ids: dict[str, str]  # run name -> run id


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the module's sweep and server: both tests read the same store, and change nothing in it."""
    return tmp_path_factory.mktemp("ui")


@pytest.fixture(scope="module")
def sweep(store_dir: Path) -> Sweep:
    """The canonical sweep, run by the real CLI into a real SQLite store under store_dir."""
    tmp_path = store_dir
    from mlflow.tracking import MlflowClient

    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = [
        sys.executable,
        "-m",
        "lrlab.run",
        "-m",
        "lr=0.01,0.03,0.1",
        f"hydra.sweep.dir={tmp_path}/multirun",
        f"hydra.run.dir={tmp_path}/out",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("lrlab")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    (parent,) = [r for r in runs if r.info.run_name == PARENT]
    child_ids = {
        r.info.run_name: r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert sorted(child_ids) == sorted(CHILDREN)
    return Sweep(tracking_uri, str(experiment.experiment_id), parent.info.run_id, child_ids)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def mlflow_ui(store_dir: Path, sweep: Sweep) -> Iterator[str]:
    """`mlflow server` over the sweep's store on a free loopback port; its base URL. Always stopped afterwards."""
    tmp_path = store_dir
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        sweep.tracking_uri,
        # The CLI's experiment keeps its own artifact root (tmp_path/mlruns); new ones would go here.
        "--artifacts-destination",
        str(tmp_path / "mlartifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = tmp_path / "mlflow-server.log"
    with log_path.open("wb") as log:
        # A session of its own: `mlflow server` starts uvicorn as a child, and the finalizer stops the whole group.
        server = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not healthy(url):
            if server.poll() is not None:
                pytest.fail(f"mlflow server exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy in {SERVER_START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        stop(server)


def stop(server: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        if server.poll() is not None:
            break
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    # uvicorn may outlive the mlflow CLI by a moment: make sure nothing of the group is left.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    context.set_default_timeout(UI_TIMEOUT_MS)
    sync_api.expect.set_options(timeout=UI_TIMEOUT_MS)  # expect() keeps its own 5 s default otherwise
    page = context.new_page()
    try:
        yield page
    finally:
        with contextlib.suppress(sync_api.Error):  # what the browser showed last, for a failure's post-mortem
            page.screenshot(path=str(tmp_path / "last-page.png"))
        context.close()


def compare_url(base: str, sweep: Sweep) -> str:
    """The UI's own compare link (Routes.getCompareRunPageRoute): JSON lists of run ids and experiment ids."""
    runs = json.dumps([sweep.child_ids[name] for name in CHILDREN], separators=(",", ":"))
    experiments = json.dumps([sweep.experiment_id], separators=(",", ":"))
    return f"{base}/#/compare-runs?runs={quote(runs)}&experiments={quote(experiments)}"


def close_assistant(page: Page) -> None:
    """MLflow 3's assistant side panel opens by default; close it so the page has the room a person would give it.

    Called once the page's own content shows, by when the app's layout (with the panel, if open) is rendered;
    a closed panel stays closed for the rest of the browser context.
    """
    close = page.locator("[data-assistant-ui] button[aria-label='Close']")
    if close.is_visible():
        close.click()
        sync_api.expect(close).to_be_hidden()


def save_screenshot(page: Page, tmp_path: Path, name: str) -> None:
    """The page as shown, under tmp_path; copied to LRLAB_SCREENSHOT_DIR too when that is set."""
    shot = tmp_path / name
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if target := os.environ.get("LRLAB_SCREENSHOT_DIR"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / name)


def test_compare_page_shows_the_three_children_and_train_loss(
    mlflow_ui: str, sweep: Sweep, page: Page, tmp_path: Path
) -> None:
    expect = sync_api.expect

    # The experiment's runs: one parent, whose three children show when it is expanded.
    page.goto(f"{mlflow_ui}/#/experiments/{sweep.experiment_id}/runs")
    parent_cell = page.get_by_role("gridcell").filter(has_text=PARENT)
    expect(parent_cell).to_be_visible()
    close_assistant(page)
    page.get_by_role("button", name="Model training", exact=True).click()  # the view a person training models picks
    parent_cell.get_by_role("button").first.click()
    for name in CHILDREN:
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()

    # The compare page for the three children, in the view chosen (the browser keeps it): no GenAI sidebar.
    page.goto(compare_url(mlflow_ui, sweep))
    expect(page.get_by_text("Comparing 3 Runs from 1 Experiment")).to_be_visible()
    close_assistant(page)
    sidebar = page.locator("aside").filter(has=page.get_by_role("button", name="Model training", exact=True))
    for tab in TRAINING_TABS:
        expect(sidebar.get_by_role("link", name=tab, exact=True)).to_be_visible()
    for tab in GENAI_ONLY_TABS:
        expect(sidebar.get_by_role("link", name=tab, exact=True)).to_have_count(0)
    run_names = page.locator("tr").filter(has=page.locator("th", has_text="Run Name:"))
    for name in CHILDREN:
        expect(run_names.get_by_text(name, exact=True)).to_be_visible()

    # The parallel-coordinates plot: lr against train_loss (the UI picks another metric by default).
    metrics = page.locator("div:text-is('Metrics:') + .du-bois-light-select")
    for remove in metrics.locator(".du-bois-light-select-selection-item-remove").all():
        remove.click()
    metrics.click()
    page.keyboard.type("train_loss")
    page.locator(".du-bois-light-select-item-option[title='train_loss']").click()
    page.keyboard.press("Escape")
    expect(metrics.locator(".du-bois-light-select-selection-item-content")).to_have_text(["train_loss"])
    expect(page.locator(".js-plotly-plot text").filter(has_text="train_loss").first).to_be_visible()

    # Only what differs, so the metrics table with train_loss fits beside the plot.
    for section in ("Parameters", "Metrics"):
        switch = page.get_by_role("switch", name=f"{section} - Show diff only")
        switch.click()
        expect(switch).to_be_checked()
    expect(page.get_by_role("link", name="train_loss", exact=True)).to_be_visible()  # the metrics table's row

    save_screenshot(page, tmp_path, COMPARE_SCREENSHOT)


def test_experiment_page_shows_the_sweep_in_the_training_view(
    mlflow_ui: str, sweep: Sweep, page: Page, tmp_path: Path
) -> None:
    """The experiment's runs as someone training models sees them: the sweep's children with lr and train_loss
    in the table, and train_loss against epoch (the UI's "Step") in the chart view, a line per child.

    MLflow 3.17.2's UI does not read the experiment's `mlflow.experimentKind` tag that lrlab sets: the view is
    the sidebar's GenAI / Model training switch (the URL's workflowType, else the browser's last choice, else
    GenAI), so a new browser opens every experiment, tagged or not, in the GenAI view. The test picks
    "Model training" as a person would; a click on the side already chosen changes nothing.
    """
    from mlflow.tracking import MlflowClient

    expect = sync_api.expect
    client = MlflowClient(sweep.tracking_uri)
    children = {name: client.get_run(run_id) for name, run_id in sweep.child_ids.items()}
    history = {name: client.get_metric_history(run_id, "train_loss") for name, run_id in sweep.child_ids.items()}
    epochs = {name: [m.step for m in sorted(points, key=lambda m: m.step)] for name, points in history.items()}
    assert all(len(steps) >= 2 for steps in epochs.values()), epochs  # a line, not a point, per child

    page.goto(f"{mlflow_ui}/#/experiments/{sweep.experiment_id}/runs")
    parent_cell = page.get_by_role("gridcell").filter(has_text=PARENT)
    expect(parent_cell).to_be_visible()
    close_assistant(page)

    # The training view: its sidebar (Runs, Models), its title (the GenAI view's is "Training runs"),
    # and none of the GenAI view's tabs.
    page.get_by_role("button", name="Model training", exact=True).click()
    sidebar = page.locator("aside").filter(has=page.get_by_role("button", name="Model training", exact=True))
    for tab in TRAINING_TABS:
        expect(sidebar.get_by_role("link", name=tab, exact=True)).to_be_visible()
    for tab in GENAI_ONLY_TABS:
        expect(sidebar.get_by_role("link", name=tab, exact=True)).to_have_count(0)
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()

    # The table: the parent expanded to its three children, with the lr and train_loss columns added through
    # the column selector (the table shows neither by default).
    parent_cell.get_by_role("button").first.click()
    for name in CHILDREN:
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    page.get_by_role("button", name="Columns", exact=True).click()
    search = page.get_by_placeholder("Search columns")
    tree = page.get_by_test_id("column-selector-tree")
    for column in ("train_loss", "lr"):  # a metric and a param; the search also lists ols_train_loss, lr_ratio, ...
        search.fill(column)
        title = page.locator(".du-bois-light-tree-title").filter(has_text=re.compile(f"^{column}$"))
        node = tree.locator(".du-bois-light-tree-treenode").filter(has=title)
        node.locator(".du-bois-light-tree-checkbox").click()
        expect(node).to_have_class(re.compile(r"\bdu-bois-light-tree-treenode-checkbox-checked\b"))
    page.keyboard.press("Escape")
    expect(search).to_be_hidden()
    for key, label in (("metrics.`train_loss`", "train_loss"), ("params.`lr`", "lr")):
        expect(page.locator(f".ag-header-cell[col-id='{key}']")).to_have_text(label)
    for name, run in children.items():
        row = page.locator(f"[role=row][row-id='{run.info.run_id}']")
        expect(row.locator("[col-id='params.`lr`']")).to_have_text(run.data.params["lr"])
        loss_cell = row.locator("[col-id='metrics.`train_loss`']")
        expect(loss_cell).to_have_text(re.compile(r"\d"))
        assert float(loss_cell.inner_text()) == pytest.approx(run.data.metrics["train_loss"], rel=1e-9), name

    # The chart view: the train_loss card, a line per child over its epochs (MLflow's steps).
    page.locator("label").filter(has=page.locator("input[name='runs-view-mode'][value='CHART']")).click()
    page.get_by_placeholder("Search metric charts").fill("train_loss")
    card = page.get_by_test_id("experiment-view-compare-runs-card").filter(
        has=page.get_by_role("heading", name="train_loss", exact=True)
    )
    expect(card).to_be_visible()
    for name in CHILDREN:  # the card's legend
        expect(card.get_by_text(f"{name} (train_loss)", exact=True)).to_be_visible()
    plot = card.locator(".js-plotly-plot")
    expect(plot.locator(".xtitle")).to_have_text("Step")
    # Each child's histories load on their own: wait until the plot holds a full trace for every child.
    page.wait_for_function(
        """([plot, epochs]) => Object.entries(epochs).every(([name, steps]) =>
            (plot.data || []).some(t => t.name === name && t.x && t.x.length === steps.length))""",
        arg=[plot.element_handle(), epochs],
    )
    traces = plot.evaluate("e => e.data.map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y)}))")
    assert {t["name"] for t in traces} == set(CHILDREN), traces
    for trace in traces:
        name = trace["name"]
        points = sorted(history[name], key=lambda m: m.step)
        assert trace["x"] == epochs[name], trace
        assert trace["y"] == pytest.approx([m.value for m in points], rel=1e-9), trace
    # ... and drawn: a marker per child and epoch, and SVG lines across the plot (Plotly drops the middle
    # vertex of a straight line, so count markers, not vertices; a flat line has no height, which Playwright
    # calls hidden, so measure the width).
    expect(plot.locator(".scatterlayer .trace .points path.point")).to_have_count(sum(map(len, epochs.values())))
    lines = plot.locator(".scatterlayer .trace path.js-line")
    expect(lines).not_to_have_count(0)
    widths = lines.evaluate_all("paths => paths.map(p => p.getBBox().width)")
    assert len(widths) >= len(CHILDREN) and all(width > 100 for width in widths), widths

    page.set_viewport_size({"width": 1400, "height": 1000})  # the two cards the search leaves, not blank page
    save_screenshot(page, tmp_path, EXPERIMENT_SCREENSHOT)
