"""Hydra multirun sweeps over matrix cells (`python -m transferlab.sweep -m ...`), launched
through submitit's local executor: the same launcher plugin and job code as on SLURM."""

import json
import subprocess
import sys

import pytest

from conftest import TINY_PARAMS, copy_project, project_env

pytestmark = pytest.mark.e2e


def run(project, *args):
    done = subprocess.run([sys.executable, "-m", *args], cwd=project, env=project_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_sweep_runs_one_tracked_cell_per_job_in_its_own_folder(tmp_path):
    from mlflow.tracking import MlflowClient

    project = copy_project(tmp_path / "p", TINY_PARAMS)
    for stage in ("download", "augment", "pretrain"):
        run(project, f"transferlab.{stage}")
    sweep_dir = tmp_path / "sweep"
    run(project, "transferlab.sweep", "-m", "quadrant=small_similar", "regime=freeze_all,scratch", "seed=0",
        "+matrix.steps=2", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep_dir}")
    cells = {json.loads((sweep_dir / str(n) / "cell.json").read_text())["regime"]: n for n in (0, 1)}
    assert set(cells) == {"freeze_all", "scratch"}
    cell = json.loads((sweep_dir / "0" / "cell.json").read_text())
    assert cell["steps"] == 2 and cell["epochs"] == 1  # 30 images in batches of 16: 2 steps per epoch
    assert list(sweep_dir.glob(".submitit/*")), "the jobs did not go through submitit"

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("transferlab-builtin").experiment_id], "tags.stage = 'sweep'")
    assert sorted(r.data.tags["regime"] for r in runs) == ["freeze_all", "scratch"]
    assert all("test/acc" in r.data.metrics for r in runs)


def test_slurm_launcher_config_composes(repo):
    shown = run(repo, "transferlab.sweep", "quadrant=small_similar", "regime=scratch",
                "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra", "--package", "hydra.launcher")
    assert "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in shown
    assert "gpus_per_node: 1" in shown and "partition: gpu" in shown
