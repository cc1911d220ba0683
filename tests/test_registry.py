"""The champion/challenger rule of the model registry, with a real (sqlite) MLflow store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from transferlab.tracking import registry
from transferlab.tracking import store as tracking_store


def threshold_net() -> nn.Module:
    """Class 1 when the first pixel's red value is above mid-grey: predictions we can count."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].bias.zero_()
        net[1].weight[1, 0] = 1.0  # input is NCHW, scaled to [-1, 1]: red channel, pixel (0, 0)
    return net


@pytest.fixture
def store(mlflow_db, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_db}")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return tracking_store.client()


def test_promotion_needs_more_than_the_margin_on_the_same_test_set(store):
    """Catches: a champion compared by its old number (not re-scored), an equal challenger promoted,
    the margin ignored; and versions without the tags and description a user reads."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(100, 2, 2, 3), dtype=np.uint8)
    predicted = (images[:, 0, 0, 0] > 127.5).astype(int)
    labels = predicted.copy()
    labels[:30] = 1 - labels[:30]  # the net gets exactly 70 of 100 right
    experiment = tracking_store.experiment_id("t")

    def challenger(correct: int, margin: float):
        run_id = store.create_run(experiment).info.run_id
        model = registry.log_model(run_id, threshold_net(), images, name="q-freeze_all")
        tags = {"quadrant": "q", "regime": "freeze_all", "seed": "0", "test_acc": f"{correct / 100:.4f}"}
        return registry.register("t-q", model, tags, "a description", correct, images, labels, margin=margin)

    first = challenger(70, 0.0)
    assert first.promoted and first.champion_version == 1 and first.champion_acc_same_test_set is None
    # The champion is re-scored on these images: 70 correct. 71 beats it by 1 point, not by more than 0.01.
    held = challenger(71, 0.01)
    assert (held.promoted, held.champion_version, held.champion_acc_same_test_set) == (False, 1, 0.70)
    equal = challenger(70, 0.0)
    assert not equal.promoted, "an equal challenger does not take the alias"
    better = challenger(72, 0.01)
    assert better.promoted and better.version == 4
    champion = store.get_model_version_by_alias("t-q", "champion")
    assert int(champion.version) == 4
    assert champion.tags["regime"] == "freeze_all" and champion.description == "a description"
    logged = store.get_logged_model(champion.source.removeprefix("models:/"))
    assert '"version": 4' in logged.tags["mlflow.modelVersions"], "the logged model links to its version"
    assert logged.name == "q-freeze_all"
    assert store.get_registered_model("t-q").tags["quadrant"] == "q"
