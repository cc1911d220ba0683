"""Stage `evaluate@<quadrant>`: test metrics and a confusion matrix for one quadrant.

Reads models/<quadrant>/{model.ckpt,history.csv}, writes reports/eval/<quadrant>/{metrics.json,
confusion.png, per_class.csv, learning_curves.png, registry.json} and logs test/acc, test/macro_f1, test/loss, test/nll,
test/ece, the figure and the deployable model (mlflow.pytorch) into the fine-tuning stage's
MLflow run; registers the model and moves `champion` only when it beats the current one on
this test set (transferlab.registry).
"""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig
from torchmetrics.classification import MulticlassCalibrationError, MulticlassConfusionMatrix

from transferlab import registry, tracking
from transferlab.cli import run_stage
from transferlab.config import ConfigError, load_config, paths, save_config
from transferlab.data import ImageArrayDataset, load_card, load_split, write_json
from transferlab.training import CHECKPOINT_NAME, HISTORY_FILE, Classifier, classification_metrics


@torch.inference_mode()
def evaluate(module: Classifier, images: np.ndarray, labels: np.ndarray, batch_size: int) -> tuple[dict, np.ndarray]:
    """Test metrics (acc, macro_f1, loss = nll: mean cross-entropy, ece: expected calibration
    error over 15 confidence bins) and the confusion matrix."""
    module.eval()
    num_classes = module.hparams.num_classes
    metrics = classification_metrics(num_classes, "")
    confusion = MulticlassConfusionMatrix(num_classes)
    calibration = MulticlassCalibrationError(num_classes, n_bins=15)
    dataset = ImageArrayDataset(images, labels)
    loss_sum = 0.0
    for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        x, y = batch
        logits = module(x)
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        metrics.update(logits, y)
        confusion.update(logits, y)
        calibration.update(logits.softmax(dim=1), y)
    results = {name: float(value) for name, value in metrics.compute().items()}
    results["loss"] = results["nll"] = loss_sum / len(dataset)
    results["ece"] = float(calibration.compute())
    return results, confusion.compute().numpy()


def per_class_table(matrix: np.ndarray, classes: list[str]) -> str:
    """CSV of precision, recall, F1 and support per class, from the confusion matrix (rows: true)."""
    lines = ["class,precision,recall,f1,support"]
    for index, name in enumerate(classes):
        hits, predicted, actual = matrix[index, index], matrix[:, index].sum(), matrix[index].sum()
        precision = hits / predicted if predicted else 0.0
        recall = hits / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        lines.append(f"{name},{precision:.4f},{recall:.4f},{f1:.4f},{int(actual)}")
    return "\n".join(lines) + "\n"


def plot_learning_curves(history_csv, title: str, path) -> None:
    """Train/val loss and accuracy per epoch from the fine-tuning stage's history.csv."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = np.genfromtxt(history_csv, delimiter=",", names=True, ndmin=1)
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    for split in ("train", "val"):
        loss_ax.plot(rows["epoch"], rows[f"{split}_loss"], marker=".", label=split)
        acc_ax.plot(rows["epoch"], rows[f"{split}_acc"], marker=".", label=split)
    loss_ax.set(xlabel="epoch", ylabel="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    acc_ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, classes: list[str], title: str, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(classes), 0.8 + 0.6 * len(classes)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                color="white" if count > matrix.max() / 2 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str]) -> None:
    cfg: DictConfig = load_config("evaluate", argv)
    where = paths(cfg)
    quadrant = cfg.quadrant
    model_dir = where["models"] / quadrant
    checkpoint = model_dir / f"{CHECKPOINT_NAME}.ckpt"
    if not checkpoint.is_file():
        raise ConfigError(f"checkpoint {checkpoint} not found: run `dvc repro finetune@{quadrant}` first")
    if cfg.evaluate.batch_size < 1:
        raise ConfigError(f"evaluate.batch_size={cfg.evaluate.batch_size} is not allowed (must be an integer >= 1)")
    margin = cfg.evaluate.promote_margin
    if not isinstance(margin, (int, float)) or isinstance(margin, bool) or not 0 <= margin < 1:
        raise ConfigError(f"evaluate.promote_margin={margin!r} is not allowed (must be a number in [0, 1): "
                          f"test accuracy the challenger must gain over the champion)")
    module = Classifier.load_from_checkpoint(checkpoint, map_location="cpu")
    classes = load_card(where["raw"] / quadrant)["classes"]
    images, labels = load_split(where["raw"] / quadrant, "test")
    results, matrix = evaluate(module, images, labels, cfg.evaluate.batch_size)
    regime = cfg.regime.name
    out_dir = where["reports"] / "eval" / quadrant
    save_config(cfg, out_dir / "config.yaml")
    write_json(out_dir / "metrics.json", {"quadrant": quadrant, "regime": regime, "n_test": int(len(labels)),
                                          "chance": 1.0 / len(classes), **results})
    plot_confusion(matrix, classes, f"{quadrant} ({regime}): test acc {results['acc']:.3f}",
                   out_dir / "confusion.png")
    (out_dir / "per_class.csv").write_text(per_class_table(matrix, classes))
    plot_learning_curves(model_dir / HISTORY_FILE, f"{quadrant} ({regime})", out_dir / "learning_curves.png")
    run_id = tracking.read_run_id(model_dir / "run.json")
    tracking.log_metrics(run_id, {f"test/{name}": value for name, value in results.items()})
    for figure in ("confusion.png", "per_class.csv", "learning_curves.png"):
        tracking.log_artifact(run_id, out_dir / figure, "evaluation")
    model = registry.log_model(run_id, module.net, images)
    decision = registry.register(registry.registered_name(cfg.tracking.experiment_name, quadrant), model, run_id,
                                 int(np.trace(matrix)), images, labels,  # the diagonal: correct predictions
                                 margin=float(margin))
    write_json(out_dir / "registry.json", decision)
    verdict = "now champion" if decision["promoted"] else "promotion deferred to `make retrain`" if decision.get(
        "deferred") else (
        f"champion stays version {decision['champion_version']} "
        f"(test acc {decision['champion_acc_same_test_set']:.4f} on this test set; margin {margin})")
    print(f"registered {decision['registered_model']} version {decision['version']}: {verdict}")
    print(f"{quadrant} ({regime}): " + "  ".join(f"test/{k}={v:.4f}" for k, v in results.items()))


if __name__ == "__main__":
    run_stage("evaluate", main)
