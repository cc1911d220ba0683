"""Lightning DDP with 2 CPU processes (gloo): a stage's cells run on every rank, tracking and files once."""

import json

import pytest
import torch

from helpers import client, run

pytestmark = pytest.mark.e2e


def test_ddp_finetune_stage_tracks_each_cell_once_and_counts_every_val_image_once(prepared_copy):
    """finetune_all with two phases (gated groups must not upset DDP's reducer) under 2-process DDP, every
    quadrant in one process. Catches: a run per rank, files written by two ranks, padded validation (16
    instead of 15 images for 5 classes: the sampler would count one twice), a second fit in the same process that
    hangs or starts its own processes."""
    project = prepared_copy
    ddp = (
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "seeds=[0]",
        "data.val_per_class=3",
        "regime.finetune_all.head_epochs=1",
        "tune.search=off",  # the search's trials are cells like these; one fit per quadrant is enough here
        "tracking.experiment_name=ddp",
    )
    run(project, "transferlab.download", "data.val_per_class=3")
    done = run(project, "transferlab.finetune", "regime=finetune_all", *ddp)
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stdout + done.stderr
    mlflow_client = client(project)
    runs = mlflow_client.search_runs([mlflow_client.get_experiment_by_name("ddp").experiment_id])
    cells = [r for r in runs if r.data.tags["stage"] == "finetune"]
    assert sorted(r.data.tags["quadrant"] for r in cells) == sorted(
        ("small_similar", "small_different", "large_similar", "large_different")
    )
    for run_ in cells:
        classes = len(
            json.loads((project / "data/raw" / run_.data.tags["quadrant"] / "card.json").read_text())["classes"]
        )
        assert run_.data.tags["val_samples"] == str(3 * classes), run_.data.tags["val_samples"]
        assert run_.data.params["strategy"] == "ddp" and run_.info.status == "FINISHED"
    two_phase = next(r for r in cells if r.data.tags["regime"] == "finetune_all")
    phases = [m.value for m in mlflow_client.get_metric_history(two_phase.info.run_id, "phase")]
    assert phases[0] == 1.0 and phases[-1] == 2.0
    results = json.loads((project / "models/finetune/finetune_all/results.json").read_text())
    assert list(results["budgets"]["6"]["small_similar"]["seeds"]) == ["0"]
    assert not [p.name for p in project.iterdir() if p.name in ("outputs", "multirun", "lightning_logs")], (
        "a per-run or per-rank output folder appeared"
    )
    trained = torch.load(project / "models/finetune/finetune_all/small_similar/model.pt", weights_only=True)
    assert set(trained["state_dict"]) >= {"head.fc.weight", "backbone.stem.0.weight"}
