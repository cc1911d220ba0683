"""Training throughput (images/s, epoch time) of the pipeline's model and loader, CPU or GPU.

Runs Lightning fits of the default model (conf/model/small_vgg.yaml) on built-in shapes
for two workloads shaped like the pipeline's stages: `pretrain` (8 classes, batch 128)
and `finetune_all` (5 classes, batch 64, backbone at 0.1 x lr). For each it compares
precision/memory-format settings and two input paths:

- `loader`: the pipeline's own path (ImageArrayDataset + DataLoader, uint8 -> float once per batch);
- `resident`: the whole dataset as one float tensor on the device (no loader cost), which
  shows what the model alone could do.

Ratios in the last columns are measured within this one run. Validation is off; the first
epoch is warm-up and not counted.

Usage: python benchmarks/train_throughput.py --accelerator gpu [--images 16000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import lightning as L
import torch
from _timing import EpochTimer
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, TensorDataset

from transferlab.core.config import as_dict
from transferlab.data.arrays import ImageArrayDataset, collate_images, to_tensor
from transferlab.datasets.synthetic import SHAPES, make_split, render_params
from transferlab.training.module import Classifier

REPO = Path(__file__).resolve().parents[1]


class ChannelsLastClassifier(Classifier):
    def on_after_batch_transfer(self, batch, dataloader_idx):
        images, labels = batch
        return images.contiguous(memory_format=torch.channels_last), labels


def fit_once(
    x,
    y,
    classes: int,
    batch: int,
    factor: float,
    accelerator: str,
    precision: str,
    channels_last: bool,
    resident: bool,
    epochs: int,
    workers: int,
) -> float:
    model_cfg = as_dict(OmegaConf.load(REPO / "conf/model/small_vgg.yaml"))
    cls = ChannelsLastClassifier if channels_last else Classifier
    torch.manual_seed(0)
    module = cls(model_cfg, classes, 32, lr=1e-3, weight_decay=5e-4, epochs=epochs, backbone_lr_factor=factor)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    if resident:
        device = "cuda" if accelerator == "gpu" else "cpu"
        data = TensorDataset(to_tensor(x).to(device), torch.as_tensor(y).to(device))
        loader = DataLoader(data, batch_size=batch, shuffle=True)
    else:
        loader = DataLoader(
            ImageArrayDataset(x, y),
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            collate_fn=collate_images,
            pin_memory=accelerator == "gpu",
            persistent_workers=workers > 0,
        )
    timer = EpochTimer()
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(module, loader)
    return statistics.median(timer.times[1:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accelerator", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--images", type=int, default=16000, help="pretrain images (finetune_all uses 2500)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch-scale", type=int, default=1, help="multiply both workloads' batch sizes")
    args = parser.parse_args()

    cfg = OmegaConf.load(REPO / "conf/experiment/builtin.yaml")
    params = render_params(as_dict(cfg.render), 32)
    workloads = {
        "pretrain": (list(SHAPES[:8]), args.images // 8, 128 * args.batch_scale, 1.0),
        "finetune_all": (list(SHAPES[8:13]), 500, 64 * args.batch_scale, 0.1),
    }
    settings = [("32-true", False)] if args.accelerator == "cpu" else [("32-true", False), ("bf16-mixed", True)]
    device = torch.cuda.get_device_name(0) if args.accelerator == "gpu" else f"CPU x{torch.get_num_threads()} threads"
    table = Table(title=f"training throughput on {device}, torch {torch.__version__}, Lightning {L.__version__}")
    for column in (
        "workload",
        "batch",
        "precision",
        "channels_last",
        "input",
        "epoch s",
        "images/s",
        "vs fp32 same input",
        "resident vs loader",
    ):
        table.add_column(column)
    for name, (classes, per_class, batch, factor) in workloads.items():
        x, y = make_split("shapes", classes, per_class, [0, 0, 0], params)
        baseline: dict[str, float] = {}
        loader_rate: dict[tuple, float] = {}
        for precision, channels_last in settings:
            for resident in (False, True):
                workers = 0 if args.accelerator == "cpu" else args.workers
                seconds = fit_once(
                    x,
                    y,
                    len(classes),
                    batch,
                    factor,
                    args.accelerator,
                    precision,
                    channels_last,
                    resident,
                    args.epochs,
                    workers,
                )
                rate = len(y) / seconds
                key = "resident" if resident else f"loader ({workers} workers)"
                baseline.setdefault(key, rate)
                if not resident:
                    loader_rate[(precision, channels_last)] = rate
                table.add_row(
                    name,
                    str(batch),
                    precision,
                    str(channels_last),
                    key,
                    f"{seconds:.2f}",
                    f"{rate:,.0f}",
                    f"{rate / baseline[key]:.2f}x",
                    f"{rate / loader_rate[(precision, channels_last)]:.2f}x" if resident else "",
                )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
