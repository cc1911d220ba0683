"""`dvc exp run --queue` with two workers: two pipelines at once, in temporary copies, into the real
repository's sqlite store; and `dvc exp show --only-changed` readable at 200 columns."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from helpers import BIN, dvc, experiment_runs, git_commit, project_env

pytestmark = pytest.mark.e2e


def test_a_queued_sweep_runs_two_pipelines_at_once_into_one_store(pipeline_copy):
    """Catches: artifacts or runs lost with DVC's temporary copies (the store must be anchored at
    DVC_ROOT), "database is locked" crashes between two writers, experiments missing from `dvc exp
    show`, and an `exp show` too wide to read."""
    project = pipeline_copy
    git_commit(project, "baseline")
    before = {r.info.run_id for r in experiment_runs(project)}
    # Two values of a knob only `evaluate` reads: each experiment runs evaluate and report (two processes).
    dvc(project, "exp", "run", "--queue", "-S", "evaluate.promote_margin=0.1,0.2")
    # Not captured through a pipe: the workers `dvc queue start` leaves behind inherit stdout/stderr, and
    # a pipe would stay open (and the call blocked) for as long as an idle worker lives.
    with open(project / ".dvc" / "tmp" / "queue-start.log", "w") as log:
        started = subprocess.run(
            [str(BIN / "dvc"), "queue", "start", "-j", "2"],
            cwd=project,
            env=project_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
    assert started.returncode == 0, (project / ".dvc" / "tmp" / "queue-start.log").read_text()
    deadline = time.time() + 600
    while time.time() < deadline:
        status = dvc(project, "queue", "status")
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(3)
    dvc(project, "queue", "stop")
    assert status.count("Success") == 2 and "Failed" not in status, status

    new = [r for r in experiment_runs(project) if r.info.run_id not in before]
    parents = [r for r in new if r.data.tags["stage"] == "pipeline"]
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
    assert max(p.info.start_time for p in parents) < min(p.info.end_time for p in parents), "ran at the same time"
    evaluations = [r for r in new if r.data.tags["stage"] == "evaluate"]
    assert len(evaluations) == 2 * 4 and {r.data.tags["mlflow.parentRunId"] for r in evaluations} == {
        p.info.run_id for p in parents
    }
    for evaluation in evaluations:
        artifacts = Path(evaluation.info.artifact_uri.removeprefix("file://"))
        assert artifacts.is_relative_to(project / "mlartifacts"), artifacts
        assert (artifacts / "evaluation" / "confusion.png").is_file(), "artifacts must survive DVC's temporary copies"
    assert not list((project / ".dvc" / "tmp" / "exps").glob("**/mlflow.db")), "no store inside a temporary copy"

    shown = subprocess.run(
        [str(BIN / "dvc"), "exp", "show", "--only-changed", "--no-pager"],
        cwd=project,
        env=project_env(COLUMNS="200"),
        capture_output=True,
        text=True,
    )
    lines = shown.stdout.splitlines()
    assert max(len(line) for line in lines) <= 200, "\n".join(lines)
    header = next(line for line in lines if "Experiment" in line)
    rows = [
        record["data"]["metrics"]["reports/metrics.json"]["data"]
        for record in exp_records(json.loads(dvc(project, "exp", "show", "--json").strip().splitlines()[-1]))
        if "reports/metrics.json" in record["data"].get("metrics", {})
    ]
    assert len(rows) >= 3, rows  # workspace, baseline, two experiments
    for quadrant in ("small_similar", "small_different", "large_similar", "large_different"):
        if len({row["winner_acc"][quadrant] for row in rows}) > 1:  # --only-changed shows it: it must fit
            assert f"winner_acc.{quadrant}" in header, header


def exp_records(node) -> list[dict]:
    """Every record of `dvc exp show --json` with params and metrics (workspace, baseline, experiments)."""
    found = []
    if isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, dict) and "params" in data and "metrics" in data:
            found.append(node)
        for value in node.values():
            found.extend(exp_records(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(exp_records(value))
    return found
