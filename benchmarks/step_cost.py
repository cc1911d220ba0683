"""Per-step cost of the pipeline's training path against a plain PyTorch loop, same model, data and steps.

Both train the default model (conf/model/small_resnet.yaml, channels-last) with AdamW on built-in shapes
at 32 px, augmented on the fly by the default albumentations pipeline, validating after every epoch:

- `plain`: a hand-written loop (DataLoader with the pipeline's collate, forward, cross-entropy,
  backward, step; `model.eval()` and a pass over the validation images after each epoch);
- `pipeline`: one cell through `transferlab.training.fit.fit`, exactly as a stage trains it
  (Lightning, the resumable checkpoint and best checkpoint after every epoch, MLflow logging
  into a temporary sqlite store, the epoch-seeded sampler).

Each workload runs `--repeats` times alternating plain and pipeline; the table gives the median ms per
optimizer step and the ratio measured in this run. Workloads: `pretrain` (8 classes, batch 128, one
pass per epoch) and `finetune` (5 classes, batch 64, 150 steps in 10 epochs, the comparison's budget).

Usage: python benchmarks/step_cost.py [--threads 1] [--repeats 3] [--steps 150]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from transferlab.core.config import as_dict, load_config
from transferlab.data.arrays import ImageArrayDataset, collate_images
from transferlab.data.augmentation import build_pipeline, pipeline_config
from transferlab.datasets.synthetic import SHAPES, make_split, render_params
from transferlab.training import fit as fitting
from transferlab.training.loaders import VAL_BATCH
from transferlab.training.runner import Recipe, build_module

REPO = Path(__file__).resolve().parents[1]


def data(classes: list[str], per_class: int, seed: int):
    cfg = OmegaConf.load(REPO / "conf/experiment/builtin.yaml")
    params = render_params(as_dict(cfg.render), 32)
    x, y = make_split("shapes", classes, per_class, [seed, 0, 0], params)
    xv, yv = make_split("shapes", classes, 50, [seed, 1, 0], params)
    transform = build_pipeline(pipeline_config(REPO, "default"))
    return ImageArrayDataset(x, y, transform, seed=0), ImageArrayDataset(xv, yv)


def plain(cfg, train_set, val_set, classes: int, batch: int, steps_per_epoch: int, epochs: int, lr: float) -> float:
    """Seconds per optimizer step of a hand-written loop."""
    torch.manual_seed(0)
    net = build_module(cfg, Recipe(init="random", lr=lr, weight_decay=5e-4), classes, epochs).net
    net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    loader = DataLoader(train_set, batch_size=batch, shuffle=True, collate_fn=collate_images, drop_last=True)
    val = DataLoader(val_set, batch_size=max(batch, VAL_BATCH), collate_fn=collate_images)
    started, done = time.perf_counter(), 0
    for _ in range(epochs):
        net.train()
        taken = 0
        while taken < steps_per_epoch:
            for images, labels in loader:
                loss = torch.nn.functional.cross_entropy(
                    net(images.contiguous(memory_format=torch.channels_last)), labels
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                taken += 1
                if taken == steps_per_epoch:
                    break
        done += taken
        net.eval()
        with torch.inference_mode():
            for images, labels in val:
                net(images.contiguous(memory_format=torch.channels_last)).argmax(1).eq(labels).sum()
    return (time.perf_counter() - started) / done


def pipeline(
    train_set,
    val_set,
    classes: int,
    batch: int,
    steps_per_epoch: int | None,
    epochs: int,
    lr: float,
    folder: Path,
    monkeypatch_env: dict,
) -> float:
    """Seconds per optimizer step of one cell through the pipeline's fit."""
    import os

    os.environ.update(monkeypatch_env)
    cfg = load_config("finetune", ["regime=scratch"], root=REPO)
    torch.manual_seed(0)
    module = build_module(cfg, Recipe(init="random", lr=lr, weight_decay=5e-4), classes, epochs)
    cell = fitting.Cell(
        name=f"bench-{time.time_ns()}",
        run_name="bench",
        seed=0,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch,
        tags={"stage": "bench"},
        params={},
        fingerprint_of={"t": time.time_ns()},
    )
    started = time.perf_counter()
    fitted = fitting.fit(cfg, cell, module, train_set, val_set, folder, None)
    seconds = time.perf_counter() - started
    steps = (steps_per_epoch or len(train_set) // batch) * epochs
    assert len(fitted.history) == epochs
    return seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150, help="finetune workload: optimizer steps (10 epochs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config("finetune", ["regime=scratch"], root=REPO)
    workloads = {
        "pretrain (8 classes, batch 128)": (list(SHAPES[:8]), 400, 128, None, 2, 1e-3),
        f"finetune ({args.steps} steps, batch 64)": (list(SHAPES[8:13]), 500, 64, args.steps // 10, 10, 1e-3),
    }
    table = Table(
        title=f"ms per optimizer step, small_resnet at 32 px, {args.threads} torch thread(s), torch {torch.__version__}"
    )
    for column in ("workload", "plain loop", "pipeline (Lightning fit)", "pipeline / plain", "repeats"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as scratch:
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{scratch}/mlflow.db"}
        for name, (classes, per_class, batch, per_epoch, epochs, lr) in workloads.items():
            train_set, val_set = data(classes, per_class, 0)
            steps_per_epoch = per_epoch or len(train_set) // batch
            found: dict[str, list[float]] = {"plain": [], "pipeline": []}
            for repeat in range(args.repeats):
                found["plain"].append(plain(cfg, train_set, val_set, len(classes), batch, steps_per_epoch, epochs, lr))
                found["pipeline"].append(
                    pipeline(
                        train_set,
                        val_set,
                        len(classes),
                        batch,
                        per_epoch,
                        epochs,
                        lr,
                        Path(scratch) / f"state{repeat}",
                        env,
                    )
                )
            a, b = statistics.median(found["plain"]), statistics.median(found["pipeline"])
            table.add_row(name, f"{a * 1e3:.1f}", f"{b * 1e3:.1f}", f"{b / a:.2f}x", str(args.repeats))
    Console().print(table)


if __name__ == "__main__":
    main()
