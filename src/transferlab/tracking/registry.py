"""The deployable model of each quadrant's recommended regime, and the registry's `champion` per quadrant.

``evaluate`` logs the recommended regime's best-validation network as a logged model named
``<quadrant>-<regime>`` (``mlflow.pytorch``): uint8 images (N, H, W, 3) in, class
probabilities out, with a signature and an input example, so
``mlflow.pyfunc.load_model(...).predict(images)`` works on raw images. It is registered with
``mlflow.register_model`` as a new version of ``<experiment>-<quadrant>`` (the logged model's
page links to the version), with quadrant, regime, seed and test accuracy as tags and a
description. The alias ``champion`` moves to it only when it beats the current champion on
the same test set: the champion is loaded from the registry and re-scored on this test split,
so a champion scored on other data is never compared by its old number.
"""

from __future__ import annotations

import os
from importlib import metadata

import numpy as np
import torch
from torch import nn

from transferlab.core.artifacts import RegistryDecision
from transferlab.tracking.store import client, tracking_uri, with_retry

CHAMPION = "champion"
PROMOTION_ENV = "TRANSFERLAB_PROMOTION"  # "defer": register, but leave the alias to transferlab.retrain


class DeployableClassifier(nn.Module):
    """uint8 images (N, H, W, 3) -> class probabilities (N, classes); the training normalisation inside."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # as transferlab.data.arrays.to_tensor
        return self.net(x).softmax(dim=1)


def registered_name(experiment: str, quadrant: str) -> str:
    return f"{experiment}-{quadrant}"


def requirements() -> list[str]:
    """Pins of the installed distributions (``torch==2.14.1``, not the build tag ``+cu130`` of
    ``torch.__version__``, which no index serves and which made every load warn of a mismatch)."""
    return [f"{name}=={metadata.version(name)}" for name in ("torch", "numpy", "mlflow")]


def log_model(run_id: str, net: nn.Module, example: np.ndarray, name: str):
    """Log the deployable model into ``run_id`` as logged model ``name``; returns MLflow's ModelInfo."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    model = DeployableClassifier(net)
    example = np.array(example[:4], dtype=np.uint8, copy=True)  # a writable copy (test arrays are memory-mapped)
    with torch.inference_mode():
        output = model(torch.from_numpy(example)).numpy()
    mlflow.set_tracking_uri(tracking_uri())
    # Requirements given, not inferred: inference loads the model in a subprocess (~10 s). MLflow's
    # default format (pt2: torch.export, no pickle) exports this network with a dynamic batch size.
    with mlflow.start_run(run_id=run_id):
        return with_retry(
            lambda: mlflow.pytorch.log_model(
                model,
                name=name,
                signature=infer_signature(example, output),
                input_example=example,
                pip_requirements=requirements(),
            )
        )


def correct_predictions(probabilities: np.ndarray, labels: np.ndarray) -> int:
    """A count, not a float accuracy: champion and challenger compare exactly."""
    return int((np.asarray(probabilities).argmax(axis=1) == np.asarray(labels)).sum())


def champion_score(name: str, images: np.ndarray, labels: np.ndarray) -> tuple[str, int] | None:
    """(version, correct predictions on these images) of the current champion, or None."""
    import mlflow.pyfunc

    try:
        version = with_retry(lambda: client().get_model_version_by_alias(name, CHAMPION))
    except Exception:  # no such registered model, or no champion yet
        return None
    model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    return version.version, correct_predictions(model.predict(np.ascontiguousarray(images)), labels)


def register(
    name: str,
    model_info,
    tags: dict[str, str],
    description: str,
    correct: int,
    images: np.ndarray,
    labels: np.ndarray,
    margin: float = 0.0,
) -> RegistryDecision:
    """Register the logged model as a new version; move `champion` to it only if its ``correct`` test
    predictions outnumber the current champion's, re-scored on the same test images, by more than
    ``margin`` x the number of test images (``margin`` is in accuracy points: 0.01 = 1%).
    With TRANSFERLAB_PROMOTION=defer (set by `make retrain`) no alias moves. Returns what happened."""
    import mlflow

    mlflow_client = client()
    current = champion_score(name, images, labels)  # before the new version exists
    mlflow.set_tracking_uri(tracking_uri())
    version = with_retry(lambda: mlflow.register_model(model_info.model_uri, name, tags=tags))
    with_retry(lambda: mlflow_client.update_model_version(name, version.version, description=description))
    with_retry(
        lambda: mlflow_client.update_registered_model(
            name,
            description=f"The recommended transfer regime for quadrant {tags['quadrant']}: each version is the "
            f"best-validation seed of the regime the comparison recommended on validation data (the leader, "
            f"or the cheapest regime of a statistical tie); "
            f"`champion` is the best on the test set so far.",
        )
    )
    with_retry(lambda: mlflow_client.set_registered_model_tag(name, "quadrant", tags["quadrant"]))
    better = current is None or correct > current[1] + margin * len(labels)
    deferred = os.environ.get(PROMOTION_ENV) == "defer"  # `make retrain` decides for all quadrants at once
    promoted = better and not deferred
    if promoted:
        with_retry(lambda: mlflow_client.set_registered_model_alias(name, CHAMPION, version.version))
        with_retry(lambda: mlflow_client.set_registered_model_tag(name, "champion_regime", tags["regime"]))
    champion = int(version.version) if promoted else (None if current is None else int(current[0]))
    return RegistryDecision(
        registered_model=name,
        version=int(version.version),
        promoted=promoted,
        champion_version=champion,
        test_acc=correct / len(labels),
        margin=margin,
        regime=tags["regime"],
        champion_acc_same_test_set=None if current is None else current[1] / len(labels),
        deferred=True if deferred else None,
    )
