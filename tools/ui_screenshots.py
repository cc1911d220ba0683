"""Screenshots of what the MLflow UI shows after `make repro`, for docs/ui/ (referenced from the README).

    python tools/ui_screenshots.py [--out docs/ui] [--experiment transferlab-builtin]

Starts `mlflow ui` on loopback over this project's mlflow.db (as `make ui` does), finds the latest
pipeline parent run, and has headless Chromium (Debian's `chromium`) capture: the runs table, the
parent run (the verdict), a compare view of the winners' runs, and the model registry. Needs a
finished `dvc repro` in this folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGIMES = ("freeze_all", "truncate_freeze", "finetune_all", "scratch")
# MLflow 3.17's UI opens in its GenAI mode (its default, kept per browser in localStorage
# "mlflow.workflowType"); this URL parameter selects "Model training", where these runs belong.
MODEL_TRAINING = "workflowType=machine_learning"
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
# The runs table needs width to show metric columns, the parent run height to reach its metrics.
SIZES = {"runs_table": (2600, 900), "parent_run": (1600, 2200)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(1)
    sys.exit(f"error: the MLflow UI did not answer at {url} within {seconds:.0f} s")


def capture(browser: str, url: str, path: Path, width: int = 1600, height: int = 1000) -> None:
    """One screenshot; the virtual time budget lets the single-page app fetch and render its data."""
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            "--virtual-time-budget=20000",
            f"--screenshot={path.resolve()}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    print(f"{shown(path)}: {url}")


def shown(path: Path) -> str:
    """A path as a user reads it: relative to the project when inside it, else as given (any --out works)."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def views(url: str, experiment: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(url)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        sys.exit(f"error: no MLflow experiment {experiment!r} in {ROOT / 'mlflow.db'}: run `make repro` first")
    exp = found.experiment_id
    parents = client.search_runs(
        [exp], "tags.stage = 'pipeline'", order_by=["attributes.start_time DESC"], max_results=1
    )
    if not parents:
        sys.exit(f"error: experiment {experiment!r} has no pipeline run: run `make repro` first")
    parent = parents[0]
    quadrants = ("small_similar", "small_different", "large_similar", "large_different")
    children = client.search_runs(
        [exp],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.stage = 'finetune' and tags.seed = '0'",
        max_results=500,
    )
    exps_json = urllib.parse.quote(json.dumps([exp]))
    compare = {}
    for quadrant in quadrants:
        # The four regimes on one quadrant at the headline (largest) budget, seed 0: the same data
        # order and head initialisation for every regime, so the curves are a paired comparison.
        cells = [r for r in children if r.data.tags.get("quadrant") == quadrant]
        if not cells:
            continue
        budget = max(int(r.data.tags.get("budget", 0)) for r in cells)
        runs = sorted(
            (r for r in cells if int(r.data.tags.get("budget", 0)) == budget),
            key=lambda r: REGIMES.index(r.data.tags["regime"]) if r.data.tags["regime"] in REGIMES else 99,
        )
        runs_json = urllib.parse.quote(json.dumps([r.info.run_id for r in runs]))
        compare[f"compare_{quadrant}"] = (
            f"{url}/#/compare-runs?runs={runs_json}&experiments={exps_json}&{MODEL_TRAINING}"
        )
    return {
        "runs_table": f"{url}/#/experiments/{exp}/runs?{MODEL_TRAINING}",
        "parent_run": f"{url}/#/experiments/{exp}/runs/{parent.info.run_id}?{MODEL_TRAINING}",
        **compare,
        "registry": f"{url}/#/models/{experiment}-small_similar",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ui")
    parser.add_argument("--experiment", default="transferlab-builtin")
    args = parser.parse_args()
    browser = next((b for b in CHROMIUM if shutil.which(b)), None)
    if browser is None:
        sys.exit(
            "error: no chromium found (allowed: chromium, chromium-browser, google-chrome): apt-get install chromium"
        )
    if not (ROOT / "mlflow.db").exists():
        sys.exit(f"error: {ROOT / 'mlflow.db'} not found: run `make repro` first")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            "mlflow",
            "ui",
            "--backend-store-uri",
            f"sqlite:///{ROOT / 'mlflow.db'}",
            "--default-artifact-root",
            str(ROOT / "mlartifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until_up(url)
        args.out.mkdir(parents=True, exist_ok=True)
        for name, view in views(url, args.experiment).items():
            width, height = SIZES.get(name, (1600, 1000))
            capture(browser, view, args.out / f"{name}.png", width, height)
    finally:
        import os
        import signal

        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
