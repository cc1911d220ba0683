"""Helpers shared by the tests (imported as ``helpers``; conftest.py holds only fixtures)."""

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
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Small enough that the whole comparison runs in about a minute on 2 cores: 4 regimes x 4 quadrants
# x 2 seeds (3 where the race adds one), 6 optimizer steps each (a few epochs), each regime tuned on a
# grid of 2 learning rates (finetune_all: x 2 recipes; TINY_SEARCH), plus the cut sweep. The experiment has real images
# (scikit-learn's digits) as its different targets, so real images flow through every stage offline.
TINY_PARAMS: dict[str, Any] = {
    "experiment.name": "builtin_digits",
    "data.source_train_per_class": 24,
    "data.small_train_per_class": 6,
    "data.large_train_per_class": 12,
    "data.val_per_class": 4,
    "data.test_per_class": 6,
    "augment.copies": 1,
    "pretrain.epochs": 2,
    "pretrain.batch_size": 32,
    "seeds": [0, 1],
    "budgets": [6],
    "finetune.epochs": 3,
    "tune.min_epochs": 1,
    "tune.reduction_factor": 2,
    "compare.max_seeds": 3,
    "finetune.batch_size": 16,
    "evaluate.batch_size": 64,
    "advise.max_images": 64,
    "cut_sweep.cut_at": ["stem", "stage2"],
    "cut_sweep.quadrants": ["small_different"],
    # On, on one target: nested subsets of 3 and 6 of large_different's 12 per class (6 is small_different's size).
    "size_curve.run": True,
    "size_curve.quadrants": ["large_different"],
    "size_curve.per_class": [3, 6, None],
}
# The tiny projects' search spaces (conf/regime/<name>.yaml's `search`): two rates (finetune_all: one rate, its
# two recipes; the two-phase one with a phase 1 that fits 3 epochs).
TINY_SEARCH = {
    "freeze_all": {"lr": [0.01, 0.1]},
    "truncate_freeze": {"lr": [0.01, 0.1]},
    "finetune_all": {
        "lr": [0.01],
        "variants": {"discriminative": {}, "two_phase": {"head_epochs": 1, "plateau_patience": 1}},
    },
    "scratch": {"lr": [0.001, 0.01]},
}
EXPERIMENT = "transferlab-" + TINY_PARAMS["experiment.name"]  # MLflow experiment; registry names add -<quadrant>
STAGES = {
    "download",
    "augment",
    "pretrain",
    "race",
    "cut_sweep",
    "size_curve",
    "evaluate",
    "advise",
    "report",
    *(f"finetune@{r}" for r in ("freeze_all", "truncate_freeze", "finetune_all", "scratch")),
}


def tracked_files() -> list[str]:
    """Files of the project as git sees them (tracked or untracked-not-ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return [f for f in listed if f and (REPO / f).is_file()]


def set_params(project: Path, params: dict) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(project / "params.yaml")
    for key, value in params.items():
        OmegaConf.update(cfg, key, value, merge=True)
    OmegaConf.save(cfg, project / "params.yaml")


def git_commit(project: Path, message: str) -> None:
    for cmd in (
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, "--allow-empty"],
    ):
        subprocess.run(cmd, cwd=project, check=True, env=project_env(), capture_output=True)


def copy_project(dest: Path, params: dict | None = None) -> Path:
    """A copy of the project's source as a fresh git repository, with params.yaml edited. With the tiny
    params, the digits targets take the tiny per-class counts too (the experiment file sets its own)."""
    for rel in tracked_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    if params is TINY_PARAMS:
        from omegaconf import OmegaConf

        for regime, search in TINY_SEARCH.items():
            conf = OmegaConf.load(dest / f"conf/regime/{regime}.yaml")
            conf.search = search
            OmegaConf.save(conf, dest / f"conf/regime/{regime}.yaml")
        # One process per stage: a tiny cell takes a second, a worker ~15 s to start (imports, MLflow), and
        # pytest-xdist already keeps both cores busy. Cells side by side are tested on their own.
        trainer = OmegaConf.load(dest / "conf/trainer/cpu.yaml")
        trainer.cell_processes = 1
        OmegaConf.save(trainer, dest / "conf/trainer/cpu.yaml")
        experiment = OmegaConf.load(dest / "conf/experiment/builtin_digits.yaml")
        for quadrant in ("small_different", "large_different"):
            experiment.targets[quadrant] = {"dataset": "digits", "classes": None}
        OmegaConf.save(experiment, dest / "conf/experiment/builtin_digits.yaml")
    # Committed results of the real run are not this copy's: drop them so DVC starts clean.
    (dest / "dvc.lock").unlink(missing_ok=True)
    if params:
        set_params(dest, params)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    git_commit(dest, "copy")
    return dest


def clone_project(template: Path, dest: Path) -> Path:
    """A copy of a prepared project (its data, models, DVC cache and MLflow store included). The store
    records absolute artifact locations: they are moved to the copy's own folder, so that no test
    writes into another project's artifacts."""
    import sqlite3

    shutil.copytree(template, dest, symlinks=True)
    db = dest / "mlflow.db"
    if db.is_file():
        with sqlite3.connect(db) as store:
            tables = [row[0] for row in store.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for column in store.execute(f"PRAGMA table_info('{table}')").fetchall():
                    if column[2].upper().startswith(("VARCHAR", "TEXT")):
                        store.execute(
                            f'UPDATE \'{table}\' SET "{column[1]}" = replace("{column[1]}", ?, ?)',
                            (str(template), str(dest)),
                        )
    return dest


def project_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "TRANSFERLAB_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run(project: Path, *args: str, check: bool = True, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """A command in the project (``python -m ...`` when the first argument is a module)."""
    cmd = [sys.executable, "-m", *args] if args[0].startswith("transferlab.") else list(args)
    if cmd[0] == "dvc":
        cmd[0] = str(BIN / "dvc")
    done = subprocess.run(cmd, cwd=project, env=project_env(**env), capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, (
            f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def dvc(project: Path, *args: str, **env: str) -> str:
    done = run(project, "dvc", *args, **env)  # type: ignore[arg-type]  # env: variables only, never check/timeout
    return done.stdout + done.stderr


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def client(project: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def running_runs(project: Path) -> list:
    """Runs of any experiment of the project's store still RUNNING (a run left open)."""
    mlflow_client = client(project)
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    return mlflow_client.search_runs(experiments, "attributes.status = 'RUNNING'")


def experiment_runs(project: Path, filter_string: str = "") -> list:
    mlflow_client = client(project)
    experiment = mlflow_client.get_experiment_by_name(EXPERIMENT)
    return mlflow_client.search_runs([experiment.experiment_id], filter_string, max_results=5000)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(cmd: list[str], cwd: Path, port: int, log_path: Path):
    """Run an MLflow server command, poll /health until it answers (~20 s here), stop it afterwards."""
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=project_env(), start_new_session=True
        )
        try:
            deadline = time.time() + 180
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    pass
                assert server.poll() is None and time.time() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.5)
            yield url
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


def rest(url: str, endpoint: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(f"{url}{endpoint}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        body = answer.read()
    return json.loads(body) if endpoint.startswith(("/api/", "/ajax-api/")) else {"bytes": body}


def tree_digest(project: Path, folders: tuple[str, ...]) -> dict[str, str]:
    """{relative path: sha256} of every file under the given folders (what a failed run must not change)."""
    import hashlib

    digest = {}
    for folder in folders:
        for path in sorted((project / folder).rglob("*")):
            if path.is_file():
                digest[str(path.relative_to(project))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def unprivileged(cmd: list[str]) -> list[str]:
    """``cmd`` run so that file permissions apply to it. Root writes to read-only folders because it holds
    CAP_DAC_OVERRIDE (CI runs as root), so as root the command runs without that capability (util-linux's
    setpriv drops it from the bounding set); as anyone else, unchanged."""
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", "--bounding-set", "-dac_override", *cmd]


def card_json(classes: list[str], train_per_class: dict[str, int] | None = None) -> str:
    """A valid data/raw/<dataset>/card.json for tests that fake the download stage's outputs."""
    from transferlab.core.artifacts import DatasetCard

    train = train_per_class if train_per_class is not None else dict.fromkeys(classes, 5)
    counts = {"train": train, "val": dict.fromkeys(classes, 2), "test": dict.fromkeys(classes, 2)}
    card = DatasetCard(
        name="fake",
        classes=classes,
        image_size=32,
        counts={s: sum(c.values()) for s, c in counts.items()},
        counts_per_class=counts,
        sha256={},
        source={"dataset": "fake"},
        resize="none",
        seed=0,
        on_bad_image="fail",
        left_out=0,
        ignored_files=0,
    )
    return json.dumps(card.as_json())


def pretrain_meta_json(stages: list[str]) -> str:
    """A valid models/pretrain/meta.json naming ``stages``."""
    from transferlab.core.artifacts import PretrainMeta

    return json.dumps(PretrainMeta(model={"name": "fake"}, source="pipeline", stages=stages, image_size=32).as_json())
