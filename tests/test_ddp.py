"""Lightning DDP with 2 CPU processes (gloo): the stage runs on every rank, tracking happens once."""

import subprocess
import sys

import pytest

from conftest import TINY_PARAMS, copy_project, project_env

pytestmark = pytest.mark.e2e


def run(project, *args):
    done = subprocess.run([sys.executable, "-m", *args], cwd=project, env=project_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_ddp_pretrain_makes_one_mlflow_run_with_the_single_process_metric_keys(tmp_path):
    from mlflow.tracking import MlflowClient

    project = copy_project(tmp_path / "p", TINY_PARAMS)
    run(project, "transferlab.download")
    run(project, "transferlab.augment")
    run(project, "transferlab.pretrain", "tracking.experiment_name=single")
    ddp = run(project, "transferlab.pretrain", "trainer=ddp", "trainer.accelerator=cpu", "tracking.experiment_name=ddp")
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in ddp.stdout + ddp.stderr, "two processes ran"

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = {}
    for name in ("single", "ddp"):
        found = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        assert len(found) == 1, f"{name}: {len(found)} runs (expected exactly one)"
        runs[name] = found[0]
    assert set(runs["ddp"].data.metrics) == set(runs["single"].data.metrics)
    assert runs["ddp"].data.tags["stage"] == "pretrain" and runs["ddp"].data.params["trainer.strategy"] == "ddp"
    assert (project / "models/pretrain/backbone.pt").is_file() and (project / "models/pretrain/model.ckpt").is_file()
    assert (project / "models/pretrain/run.json").read_text().count(runs["ddp"].info.run_id) == 1


def test_ddp_two_phase_finetuning_runs_and_is_tracked_once(tmp_path):
    """finetune_all with a head-only phase under DDP: the gated groups must not upset the reducer."""
    from mlflow.tracking import MlflowClient

    project = copy_project(tmp_path / "p", TINY_PARAMS)
    for stage in ("download", "augment", "pretrain"):
        run(project, f"transferlab.{stage}")
    run(project, "transferlab.finetune", "quadrant=large_similar", "trainer=ddp", "trainer.accelerator=cpu",
        "quadrants.large_similar.epochs=3", "quadrants.large_similar.head_epochs=1", "tracking.experiment_name=ddp")
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert len(runs) == 1
    phases = [m.value for m in client.get_metric_history(runs[0].info.run_id, "phase")]
    backbone_lr = [m.value for m in client.get_metric_history(runs[0].info.run_id, "lr/backbone.stem")]
    assert phases == [1.0, 2.0, 2.0]
    assert backbone_lr[0] == 0.0 and backbone_lr[1] > 0
