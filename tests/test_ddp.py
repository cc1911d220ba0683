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


@pytest.mark.parametrize("regime,quadrant", [("freeze_all", "small_similar"), ("truncate_freeze", "small_different"),
                                             ("scratch", "large_different")])
def test_ddp_regime_matches_single_process(tmp_path, regime, quadrant):
    """Per regime under 2-process DDP: one run with the single-process metric keys, frozen stages
    bit-identical to the pretrained weights, every validation image counted exactly once (15
    images: a padding sampler would count 16), and test metrics equal to a single-process
    evaluation of the same checkpoint."""
    import json

    import torch
    from mlflow.tracking import MlflowClient

    from transferlab.data import load_split
    from transferlab.evaluate import evaluate
    from transferlab.training import Classifier

    project = copy_project(tmp_path / "p", {**TINY_PARAMS, "data.val_per_class": 3})
    for stage in ("download", "augment", "pretrain"):
        run(project, f"transferlab.{stage}")
    args = (f"quadrant={quadrant}", f"regime={regime}", f"quadrants.{quadrant}.epochs=2", "evaluate.batch_size=4")
    run(project, "transferlab.finetune", *args, "tracking.experiment_name=single")
    run(project, "transferlab.finetune", *args, "trainer=ddp", "trainer.accelerator=cpu", "tracking.experiment_name=ddp")
    run(project, "transferlab.evaluate", *args, "tracking.experiment_name=ddp")

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    single, ddp = (client.search_runs([client.get_experiment_by_name(n).experiment_id]) for n in ("single", "ddp"))
    assert len(single) == 1 and len(ddp) == 1, (len(single), len(ddp))
    training_keys = {k for k in ddp[0].data.metrics if not k.startswith("test/")}  # evaluate ran for ddp only
    assert training_keys == set(single[0].data.metrics)
    assert ddp[0].data.params["trainer.strategy"] == "ddp"
    assert not [p.name for p in project.iterdir() if p.name in ("outputs", "multirun", "lightning_logs")], \
        "a per-run or per-rank output folder appeared"
    assert [m.value for m in client.get_metric_history(ddp[0].info.run_id, "val/samples")] == [15.0, 15.0]

    module = Classifier.load_from_checkpoint(project / "models" / quadrant / "model.ckpt", map_location="cpu")
    x_val, y_val = load_split(project / "data/raw" / quadrant, "val")
    val, _ = evaluate(module, x_val, y_val, batch_size=4)
    assert val["acc"] == pytest.approx(ddp[0].data.metrics["best/val_acc"], abs=1e-6), "val/acc under DDP is not exact"
    x_test, y_test = load_split(project / "data/raw" / quadrant, "test")
    test, _ = evaluate(module, x_test, y_test, batch_size=7)
    reported = json.loads((project / "reports/eval" / quadrant / "metrics.json").read_text())
    assert reported["n_test"] == len(y_test)
    for key in ("acc", "macro_f1", "loss"):
        assert ddp[0].data.metrics[f"test/{key}"] == pytest.approx(test[key], abs=1e-6)

    if regime != "scratch":
        pretrained = torch.load(project / "models/pretrain/backbone.pt", weights_only=True)
        kept = module.net.backbone.state_dict()
        assert kept, "no frozen stages kept"
        for key, value in kept.items():
            assert torch.equal(value, pretrained[key]), f"{key} changed under DDP"
