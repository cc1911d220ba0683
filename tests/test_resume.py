"""Crash safety: killed stages resume exactly, stopped stages never count as done, no run is left
RUNNING, outputs are replaced only when complete, and two runs of one stage do not collide."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import BIN, client, experiment_runs, project_env, run, tree_digest

pytestmark = pytest.mark.e2e


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start(project: Path, *cmd: str, **env: str) -> subprocess.Popen:
    args = [sys.executable, "-m", *cmd] if cmd[0].startswith("transferlab.") else [str(BIN / cmd[0]), *cmd[1:]]
    return subprocess.Popen(
        args,
        cwd=project,
        env=project_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    """Until ``path`` exists (a glob pattern in its last parts, e.g. ``state/small_similar-*/last.ckpt``)."""
    deadline = time.time() + timeout
    parts = path.parts
    wild = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), None)
    anchor = path if wild is None else Path(*parts[:wild])
    pattern = None if wild is None else str(Path(*parts[wild:]))
    while not (path.exists() if pattern is None else any(anchor.glob(pattern))):
        assert process.poll() is None, (
            f"finished before {path} appeared:\n{process.stdout.read()[-3000:] if process.stdout else ''}"
        )
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def cell_folders(state: Path) -> dict[str, Path]:
    """{MLflow run id: the cell's state folder} from each folder's cell.json."""
    found = {}
    for record in state.glob("*/cell.json"):
        run_id = json.loads(record.read_text()).get("run_id")
        if run_id:
            found[run_id] = record.parent
    return found


def stage_pid(process: subprocess.Popen, module: str) -> int:
    """The pid of the `python -m <module>` process started (directly or by dvc) from ``process``."""
    assert isinstance(process.args, list), process.args
    if f"-m {module}" in " ".join(map(str, process.args)):
        return process.pid
    # Anchored at the start: `/bin/sh -c "python -m ..."` (how dvc may run a stage's cmd) matches an
    # unanchored pattern too, and SIGTERM to that shell orphans the stage instead of stopping it.
    found = subprocess.run(
        ["pgrep", "-s", str(process.pid), "-f", f"^([^ ]*/)?python[0-9.]* -m {module}( |$)"],
        capture_output=True,
        text=True,
    )
    pids = [int(p) for p in found.stdout.split()]
    assert pids, f"no {module} process under {process.pid}"
    return pids[0]


def test_pretrain_killed_with_sigkill_resumes_bit_identical_into_the_same_run(prepared_copy):
    """Catches: a resume that restarts from scratch, continues with other random draws (augmentation,
    shuffling, dropout), loses or repeats an epoch's metrics, or opens a second MLflow run."""
    project = prepared_copy
    args = ("transferlab.pretrain", "pretrain.epochs=3")
    run(project, *args)
    straight = {name: sha(project / "models/pretrain" / name) for name in ("backbone.pt", "history.csv", "meta.json")}

    process = start(project, *args)
    wait_for(project / ".transferlab/state/pretrain/pretrain/last.ckpt", process)
    os.kill(stage_pid(process, "transferlab.pretrain"), signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    done = run(project, *args)
    assert "marked 1 run(s) KILLED whose process is gone" in done.stdout
    resumed = {name: sha(project / "models/pretrain" / name) for name in straight}
    assert resumed == straight, "the resumed pretraining differs from the uninterrupted one"
    runs = [r for r in experiment_runs(project) if r.data.tags.get("stage") == "pretrain"]
    last = max(runs, key=lambda r: r.info.start_time)
    assert last.data.tags["resumed"] == "true" and last.info.status == "FINISHED"
    history = experiment_runs(project)  # noqa: F841 (the store is readable after both runs)
    from helpers import client

    for metric in ("train/loss", "val/acc"):
        steps = [m.step for m in client(project).get_metric_history(last.info.run_id, metric)]
        assert sorted(steps) == [1, 2, 3], f"{metric}: epochs logged: {steps}"
    assert not [r for r in experiment_runs(project) if r.info.status == "RUNNING"]


def test_finetune_stopped_by_sigterm_then_sigkill_under_dvc_resumes_to_the_same_results(
    prepared_copy, pipeline_project
):
    """SIGTERM (as a scheduler or `timeout` sends it) through the real `dvc repro`, then SIGKILL, then a
    third `dvc repro` that finishes. Catches: a stopped stage recorded as done in dvc.lock, lost finished
    cells, runs left RUNNING, and results that differ from the uninterrupted pipeline's."""
    project = prepared_copy
    stage = "finetune@finetune_all"
    state = project / ".transferlab/state/finetune-finetune_all"

    process = start(project, "dvc", "repro", stage)
    wait_for(state / "small_different-finetune_all-*" / "last.ckpt", process)  # small_similar's search is done
    os.kill(stage_pid(process, "transferlab.finetune"), signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode != 0, output[-2000:]
    assert "stopped by SIGTERM" in output
    lock = (project / "dvc.lock").read_text() if (project / "dvc.lock").exists() else ""
    assert stage not in lock, "a stopped stage was recorded as done"
    runs = experiment_runs(project)
    assert not [r for r in runs if r.info.status == "RUNNING"], "SIGTERM left a run RUNNING"
    stopped = [r for r in runs if r.info.status == "KILLED" and r.data.tags["stage"] in ("finetune", "tune")]
    assert stopped, "the cells in training when SIGTERM came must be closed KILLED"
    folders = cell_folders(state)
    for run_ in stopped:  # a search's run is KILLED with its trial; any unfinished cell may be stopped
        cell = folders.get(run_.info.run_id)
        assert cell is None or not (cell / "result.json").exists(), f"a finished cell's run is KILLED: {cell}"
    for cell in state.glob("*/result.json"):
        record = json.loads((cell.parent / "cell.json").read_text())
        assert client(project).get_run(record["run_id"]).info.status == "FINISHED", cell.parent.name

    process = start(project, "dvc", "repro", stage)
    wait_for(state / "large_similar-finetune_all-*" / "last.ckpt", process)
    os.kill(stage_pid(process, "transferlab.finetune"), signal.SIGKILL)
    process.communicate(timeout=120)

    output = run(project, "dvc", "repro", stage).stdout
    assert "marked" in output and "KILLED whose process is gone" in output
    expected = pipeline_project / "models/finetune/finetune_all"
    produced = project / "models/finetune/finetune_all"
    assert json.loads((produced / "results.json").read_text()) == json.loads((expected / "results.json").read_text())
    for quadrant in ("small_similar", "small_different", "large_similar", "large_different"):
        assert sha(produced / quadrant / "model.pt") == sha(expected / quadrant / "model.pt"), quadrant
    runs = experiment_runs(project)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    cells = [
        r
        for r in runs
        if r.data.tags.get("regime") == "finetune_all"
        and r.info.status == "FINISHED"
        and r.data.tags["stage"] == "finetune"
    ]
    assert sorted((r.data.tags["quadrant"], r.data.tags["seed"]) for r in cells) == sorted(
        (q, s) for q in ("small_similar", "small_different", "large_similar", "large_different") for s in "01"
    ), "each cell must end as one FINISHED run (a resumed cell continues its run)"
    trials = [
        r
        for r in runs
        if r.data.tags.get("regime") == "finetune_all"
        and r.data.tags["stage"] == "tune"
        and r.info.status == "FINISHED"
        and "chosen_lr" not in r.data.params
    ]
    assert len({r.info.run_name for r in trials}) == len(trials), "a trial finished twice (the search re-ran it)"
    assert any(r.data.tags.get("resumed") == "true" for r in trials + cells), "no killed fit resumed its run"
    assert not state.exists(), "the resumable state is removed once the outputs are in place"


def test_sigint_and_a_trainer_error_close_the_run_and_the_parent(prepared_copy):
    """Catches: Ctrl-C leaving the parent RUNNING, an exception in Trainer construction leaving its run
    RUNNING, and a stopped stage exiting 0."""
    project = prepared_copy
    process = start(project, "transferlab.finetune", "regime=scratch", TRANSFERLAB_PIPELINE_ID="sigint-test")
    wait_for(project / ".transferlab/state/finetune-scratch/small_similar-scratch-*/last.ckpt", process)
    os.kill(process.pid, signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signal.SIGINT, output[-2000:]
    runs = experiment_runs(project)
    assert "RUNNING" not in {r.info.status for r in runs}, [(r.data.tags.get("stage"), r.info.status) for r in runs]
    assert any(r.info.status == "KILLED" for r in runs if r.data.tags.get("stage") in ("finetune", "tune"))
    [parent] = [r for r in runs if r.data.tags.get("pipeline_key") == "sigint-test"]
    assert parent.info.status == "KILLED"

    done = run(
        project,
        "transferlab.finetune",
        "regime=finetune_all",
        "trainer.precision=bogus",
        check=False,
        TRANSFERLAB_PIPELINE_ID="error-test",
    )
    assert done.returncode == 1 and "bogus" in done.stderr
    runs = experiment_runs(project)
    assert "RUNNING" not in {r.info.status for r in runs}
    failed = [r for r in runs if r.data.tags.get("regime") == "finetune_all"]
    assert failed and {r.info.status for r in failed} == {"FAILED"}
    [parent] = [r for r in runs if r.data.tags.get("pipeline_key") == "error-test"]
    assert parent.info.status == "FAILED"


def test_evaluate_never_replaces_good_results_before_failing(pipeline_copy):
    """Catches: outputs overwritten by a run that then fails (here: one winner's network file is broken)."""
    project = pipeline_copy
    comparison = json.loads((project / "reports/evaluate/comparison.json").read_text())
    winner = comparison["budgets"][comparison["headline"]]["large_different"]["verdict"]["recommended"]
    for folder in ("models/finetune", "models/race"):  # the network may be the race's
        path = project / folder / winner / "large_different" / "model.pt"
        if path.is_file():
            path.write_bytes(b"truncated")
    before = tree_digest(project, ("reports",))
    done = run(project, "transferlab.evaluate", check=False)
    assert done.returncode == 2 and "model.pt cannot be loaded" in done.stderr.strip().splitlines()[-1]
    assert tree_digest(project, ("reports",)) == before


def test_a_second_run_of_a_running_stage_refuses_with_one_line(prepared_copy):
    """Catches: two processes writing the same stage outputs (the last one wins, the other's run is orphaned)."""
    project = prepared_copy
    first = start(project, "transferlab.finetune", "regime=scratch")
    try:
        wait_for(project / ".transferlab/state/finetune-scratch", first)
        second = run(project, "transferlab.finetune", "regime=scratch", check=False)
        assert second.returncode == 75, second.stderr
        assert second.stderr.strip().splitlines()[-1].startswith("error: finetune@scratch is already running (pid")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


def test_a_bit_identical_retrain_leaves_everything_downstream_up_to_date(pipeline_copy):
    """Catches: run ids, timestamps or absolute paths in DVC outputs (a retrain would change their hash and
    invalidate every downstream stage)."""
    project = pipeline_copy
    before = tree_digest(project, ("models/finetune/freeze_all",))
    run(project, "dvc", "repro", "-f", "-s", "finetune@freeze_all")
    assert tree_digest(project, ("models/finetune/freeze_all",)) == before
    status = run(project, "dvc", "status", "--json").stdout
    assert json.loads(status or "{}") == {}, status
