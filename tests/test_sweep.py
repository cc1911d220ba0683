"""Hydra multirun sweeps over comparison cells (`python -m transferlab.sweep -m ...`)."""

import json

import pytest

from helpers import EXPERIMENT, client, run


def test_slurm_launcher_config_composes(repo):
    """Catches: a SLURM launcher config that no longer composes (found only on the cluster)."""
    done = run(
        repo,
        "transferlab.sweep",
        "quadrant=small_similar",
        "regime=scratch",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "--cfg",
        "hydra",
        "--package",
        "hydra.launcher",
    )
    shown = done.stdout + done.stderr
    assert "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in shown
    assert "gpus_per_node: 1" in shown and "partition: gpu" in shown


@pytest.mark.e2e
def test_sweep_runs_one_tracked_cell_per_job_in_its_own_folder(prepared_copy, tmp_path):
    """Through submitit's local executor: the same launcher plugin and job code as on SLURM. Catches:
    jobs sharing an output folder, cells that differ from the pipeline's, untracked jobs."""
    sweep_dir = tmp_path / "sweep"
    run(
        prepared_copy,
        "transferlab.sweep",
        "-m",
        "quadrant=small_similar",
        "regime=freeze_all,scratch",
        "seed=3",
        "+budgets=[4]",
        "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={sweep_dir}",
    )
    cells = {json.loads((sweep_dir / str(n) / "cell.json").read_text())["regime"]: n for n in (0, 1)}
    assert set(cells) == {"freeze_all", "scratch"}
    cell = json.loads((sweep_dir / "0" / "cell.json").read_text())
    assert cell["steps"] == 4 and cell["seed"] == 3 and 0 <= cell["test"]["acc"] <= 1
    assert list(sweep_dir.glob(".submitit/*")), "the jobs did not go through submitit"
    mlflow_client = client(prepared_copy)
    runs = mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name(EXPERIMENT).experiment_id], "tags.stage = 'sweep'"
    )
    assert sorted(r.data.tags["regime"] for r in runs) == ["freeze_all", "scratch"]
    assert all("test/acc" in r.data.metrics and r.data.tags["seed"] == "3" for r in runs)
