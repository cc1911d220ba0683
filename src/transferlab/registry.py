"""The MLflow model of a fine-tuned quadrant, and the registry's `champion` per quadrant.

``evaluate`` logs the tested network into its training run with ``mlflow.pytorch`` as a
deployable model: uint8 images (N, H, W, 3) in, class probabilities out, with a signature and
an input example, so ``mlflow.pyfunc.load_model(...).predict(images)`` works on raw images.
Every evaluated model becomes a version of the registered model ``<experiment>-<quadrant>``.
The alias ``champion`` moves to it only when it beats the current champion on the same
test set: the champion is loaded from the registry and re-scored on this test split, so a
champion scored on other data is never compared by its old number.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from transferlab import tracking

CHAMPION = "champion"
PROMOTION_ENV = "TRANSFERLAB_PROMOTION"  # "defer": register, but leave the alias to transferlab.retrain


class DeployableClassifier(nn.Module):
    """uint8 images (N, H, W, 3) -> class probabilities (N, classes); the training normalisation inside."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # as transferlab.data.to_tensor
        return self.net(x).softmax(dim=1)


def registered_name(experiment: str, quadrant: str) -> str:
    return f"{experiment}-{quadrant}"


def log_model(run_id: str, net: nn.Module, example: np.ndarray) -> tuple[str, str]:
    """Log the deployable model into ``run_id`` (a logged model named ``model``); returns its
    model URI and model id (a tracking server needs the id to register the URI)."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    model = DeployableClassifier(net)
    example = np.array(example[:4], dtype=np.uint8, copy=True)  # a writable copy (test arrays are memory-mapped)
    with torch.inference_mode():
        output = model(torch.from_numpy(example)).numpy()
    mlflow.set_tracking_uri(tracking.tracking_uri())
    # Requirements given, not inferred: inference loads the model in a subprocess (~10 s).
    requirements = [f"torch=={torch.__version__}", f"numpy=={np.__version__}", f"mlflow=={mlflow.__version__}"]
    with mlflow.start_run(run_id=run_id):
        info = tracking.with_retry(lambda: mlflow.pytorch.log_model(
            model, name="model", signature=infer_signature(example, output), input_example=example,
            pip_requirements=requirements, serialization_format="pickle"))
    return info.model_uri, info.model_id


def correct_predictions(probabilities: np.ndarray, labels: np.ndarray) -> int:
    """A count, not a float accuracy: champion and challenger compare exactly."""
    return int((np.asarray(probabilities).argmax(axis=1) == np.asarray(labels)).sum())


def champion_score(name: str, images: np.ndarray, labels: np.ndarray) -> tuple[str, int] | None:
    """(version, correct predictions on these images) of the current champion, or None."""
    import mlflow.pyfunc

    client = tracking.client()
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # no such registered model, or no champion yet
        return None
    model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    return version.version, correct_predictions(model.predict(np.ascontiguousarray(images)), labels)


def register(name: str, model: tuple[str, str], run_id: str, correct: int, images: np.ndarray, labels: np.ndarray,
             margin: float = 0.0) -> dict:
    """Register the model as a new version; move `champion` to it only if its ``correct`` test
    predictions outnumber the current champion's, re-scored on the same test images, by more
    than ``margin`` x the number of test images (``margin`` is in accuracy points: 0.01 = 1%).
    With TRANSFERLAB_PROMOTION=defer (set by `make retrain`) no alias moves. Returns what happened."""
    client = tracking.client()
    current = champion_score(name, images, labels)  # before the new version exists
    try:
        tracking.with_retry(lambda: client.create_registered_model(name))
    except Exception as err:  # already registered
        if "already exists" not in str(err).lower() and "RESOURCE_ALREADY_EXISTS" not in str(err):
            raise
    model_uri, model_id = model
    version = tracking.with_retry(lambda: client.create_model_version(name, model_uri, run_id=run_id,
                                                                      model_id=model_id))
    client.set_model_version_tag(name, version.version, "test_acc", f"{correct / len(labels):.6f}")
    better = current is None or correct > current[1] + margin * len(labels)
    deferred = os.environ.get(PROMOTION_ENV) == "defer"  # `make retrain` decides for all quadrants at once
    promoted = better and not deferred
    if promoted:
        tracking.with_retry(lambda: client.set_registered_model_alias(name, CHAMPION, version.version))
    champion = int(version.version) if promoted else (None if current is None else int(current[0]))
    return {"registered_model": name, "version": int(version.version), "promoted": promoted,
            "champion_version": champion, "test_acc": correct / len(labels), "margin": margin,
            "champion_acc_same_test_set": None if current is None else current[1] / len(labels),
            **({"deferred": True} if deferred else {})}
