"""`dvc exp run --queue` with two workers: two pipelines at once, in temporary copies, into the real
repository's sqlite store; and `dvc exp show --only-changed` readable at 200 columns."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from helpers import BIN, dvc, experiment_runs, git_commit, project_env

pytestmark = pytest.mark.e2e


def run_queue(project: Path, workers: int, seconds: float) -> str:
    """`dvc queue start -j workers`, then `dvc queue status` until nothing is queued or running (at most
    ``seconds``), then `dvc queue stop`; returns the last status."""
    # Not captured through a pipe: the workers `dvc queue start` leaves behind inherit stdout/stderr, and
    # a pipe would stay open (and the call blocked) for as long as an idle worker lives.
    with open(project / ".dvc" / "tmp" / "queue-start.log", "w") as log:
        started = subprocess.run(
            [str(BIN / "dvc"), "queue", "start", "-j", str(workers)],
            cwd=project,
            env=project_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
    assert started.returncode == 0, (project / ".dvc" / "tmp" / "queue-start.log").read_text()
    deadline = time.time() + seconds
    while time.time() < deadline:
        status = dvc(project, "queue", "status")
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(3)
    dvc(project, "queue", "stop")
    return status


def test_a_queued_sweep_runs_two_pipelines_at_once_into_one_store(pipeline_copy):
    """Catches: artifacts or runs lost with DVC's temporary copies (the store must be anchored at
    DVC_ROOT), "database is locked" crashes between two writers, experiments missing from `dvc exp
    show`, and an `exp show` too wide to read."""
    project = pipeline_copy
    git_commit(project, "baseline")
    before = {r.info.run_id for r in experiment_runs(project)}
    # Two values of a knob only `evaluate` reads: each experiment runs evaluate and report (two processes).
    dvc(project, "exp", "run", "--queue", "-S", "evaluate.promote_margin=0.1,0.2")
    status = run_queue(project, workers=2, seconds=600)
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
    assert len(rows) == 4, rows  # workspace, baseline, two experiments
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


def photo_folder(root: Path, classes: tuple[str, ...], per_class: int, shade: int) -> Path:
    """Class folders of flat-ish JPEGs with a gradient (not one flat colour); ``shade`` makes another set's bytes."""
    import numpy as np
    from PIL import Image

    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.zeros((40, 40, 3), dtype=np.uint8)
            pixels[..., 0] = 30 + 60 * c
            pixels[..., 1] = (np.arange(40)[:, None] * 3 + 5 * i + shade) % 256
            pixels[..., 2] = (np.arange(40)[None, :] * 2 + shade) % 256
            Image.fromarray(pixels).save(root / name / f"{name}_{i:03d}.jpg", quality=95)
    return root


def test_queued_experiments_over_two_folder_sets_set_every_root_from_the_command_line(prepared_copy, tmp_path):
    """Catches: folder roots that need a file edited under conf/dataset/ (`dvc exp run -S` could not set
    them, so a queue over several folder sets was impossible), and a root set on the command line that
    the download stage does not read."""
    project = prepared_copy
    git_commit(project, "baseline")
    roots = {}
    for n, name in enumerate(("one", "two")):
        roots[name] = {
            dataset: photo_folder(tmp_path / name / dataset, classes, 40, shade=40 * n + 13 * d)
            for d, (dataset, classes) in enumerate(
                {"my_source": ("a", "b", "c"), "my_similar": ("d", "e"), "my_different": ("f", "g")}.items()
            )
        }
        settings = [f"datasets.{dataset}.root={root}" for dataset, root in roots[name].items()]
        dvc(
            project,
            "exp",
            "run",
            "--queue",
            "download",
            "--name",
            f"folders-{name}",
            "-S",
            "experiment.name=my_folders",
            *[arg for setting in settings for arg in ("-S", setting)],
        )
    status = run_queue(project, workers=1, seconds=300)
    assert status.count("Success") == 2 and "Failed" not in status, status
    for name, by_dataset in roots.items():
        # The experiment's params.yaml and dvc.lock, then its data/raw from the cache (`dvc exp apply` would
        # also want the later stages' outputs, which a download-only experiment does not have).
        refs = subprocess.run(
            ["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=project, capture_output=True, text=True
        ).stdout.split()
        [ref] = [r for r in refs if r.endswith(f"/folders-{name}")]
        subprocess.run(["git", "checkout", ref, "--", "params.yaml", "dvc.lock"], cwd=project, check=True)
        dvc(project, "checkout", "data/raw")
        params = yaml.safe_load((project / "params.yaml").read_text())
        assert params["experiment"]["name"] == "my_folders"
        for dataset, root in by_dataset.items():
            assert params["datasets"][dataset]["root"] == str(root)
        for prepared, dataset in (
            ("source", "my_source"),
            ("small_similar", "my_similar"),
            ("large_different", "my_different"),
        ):
            card = json.loads((project / "data" / "raw" / prepared / "card.json").read_text())
            assert card["source"] == {"dataset": dataset, "kind": "folder", "root": str(by_dataset[dataset])}
