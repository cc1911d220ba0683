"""Test metrics of a trained network (torchmetrics) and its confusion matrix."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import MulticlassCalibrationError, MulticlassConfusionMatrix

from transferlab.data.arrays import ImageArrayDataset, collate_images
from transferlab.training.module import Classifier, classification_metrics

METRICS = ("acc", "macro_f1", "loss", "ece")


@torch.inference_mode()
def evaluate(module: Classifier, data, batch_size: int = 512) -> tuple[dict[str, float], np.ndarray]:
    """Metrics on ``data`` (an (images, labels) pair of arrays, or a TensorDataset of cached features)
    and the confusion matrix (rows: true class). acc, macro_f1, loss (mean cross-entropy, the NLL)
    and ece (expected calibration error, 15 confidence bins)."""
    module.eval()
    num_classes = module.hparams.num_classes
    metrics = classification_metrics(num_classes, "")
    confusion = MulticlassConfusionMatrix(num_classes)
    calibration = MulticlassCalibrationError(num_classes, n_bins=15)
    cached = isinstance(data, TensorDataset)
    dataset = data if cached else ImageArrayDataset(*data)
    loss_sum = 0.0
    for x, y in DataLoader(dataset, batch_size=batch_size, collate_fn=None if cached else collate_images):
        logits = module(x)
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        metrics.update(logits, y)
        confusion.update(logits, y)
        calibration.update(logits.softmax(dim=1), y)
    results = {name: float(value) for name, value in metrics.compute().items()}
    results["loss"] = loss_sum / len(dataset)
    results["ece"] = float(calibration.compute())
    return {k: round(results[k], 6) for k in METRICS}, confusion.compute().numpy()


def per_class_table(matrix: np.ndarray, classes: list[str]) -> str:
    """CSV of precision, recall, F1 and support per class, from the confusion matrix (rows: true)."""
    from transferlab.core.files import csv_text

    rows = []
    for index, name in enumerate(classes):
        hits, predicted, actual = matrix[index, index], matrix[:, index].sum(), matrix[index].sum()
        precision = hits / predicted if predicted else 0.0
        recall = hits / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append([name, f"{precision:.4f}", f"{recall:.4f}", f"{f1:.4f}", int(actual)])
    return csv_text(["class", "precision", "recall", "f1", "support"], rows)


@torch.inference_mode()
def correct_predictions(module: Classifier, data, batch_size: int = 512) -> np.ndarray:
    """Per row of ``data`` (a training-time dataset: images or cached features, in order), whether the
    network predicts its label: the paired bootstrap of the verdict resamples these."""
    module.eval()
    cached = isinstance(data, TensorDataset)
    loader = DataLoader(
        data, batch_size=batch_size, collate_fn=None if cached else collate_images, generator=torch.Generator()
    )  # its own generator: no draw from the global RNG
    found = [(module(x).argmax(dim=1) == y).numpy() for x, y in loader]
    return np.concatenate(found) if found else np.zeros(0, dtype=bool)
