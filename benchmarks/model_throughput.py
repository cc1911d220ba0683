"""Images per second of a model's training step and of its feature extraction, per image size, on this CPU.

For each model of conf/model (default: small_resnet at 32 px, efficientnet_lite0 at 64/96/128/160 px):
- `train`: forward + backward + AdamW step of the whole network with a 5-class head (finetune_all's
  step), channels-last, fp32, batch ``--batch``;
- `features`: a forward pass of the frozen backbone in inference mode, batch 128 (the feature cache and
  the advisor's probes).

Random images (the cost does not depend on the pixels); the first ``--warmup`` steps are not counted;
the median of ``--steps`` steps. Ratios against the first row are measured in this run.

Usage: python benchmarks/model_throughput.py [--threads 1] [--batch 32] [--steps 8]
       [--models small_resnet:32 efficientnet_lite0:96 ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from transferlab.models import Head, TransferNet, build_backbone

REPO = Path(__file__).resolve().parents[1]
DEFAULT = [
    "small_resnet:32",
    "efficientnet_lite0:64",
    "efficientnet_lite0:96",
    "efficientnet_lite0:128",
    "efficientnet_lite0:160",
]


def model_cfg(name: str) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / f"{name}.yaml"))
    assert isinstance(cfg, dict)
    return {**cfg, "name": name}


def median_seconds(step, steps: int, warmup: int) -> float:
    times = []
    for index in range(warmup + steps):
        start = time.perf_counter()
        step()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_rate(name: str, side: int, batch: int, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    backbone = build_backbone(model_cfg(name), side)
    net = TransferNet(backbone, Head(backbone.out_channels, 5)).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, side, side).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (batch,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()

    return batch / median_seconds(step, steps, warmup)


def feature_rate(name: str, side: int, steps: int, warmup: int, batch: int = 128) -> float:
    backbone = build_backbone(model_cfg(name), side).to(memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 3, side, side).contiguous(memory_format=torch.channels_last)

    def step():
        with torch.inference_mode():
            backbone(x)

    return batch / median_seconds(step, max(2, steps // 2), 1 if warmup else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=DEFAULT, help="name:side pairs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = Table(title=f"model throughput, {args.threads} thread(s), train batch {args.batch}, fp32 channels-last")
    for column in ("model", "px", "train img/s", "features img/s", "train vs first", "features vs first"):
        table.add_column(column, justify="right")
    first: tuple[float, float] | None = None
    for entry in args.models:
        name, side = entry.split(":")
        train = train_rate(name, int(side), args.batch, args.steps, args.warmup)
        features = feature_rate(name, int(side), args.steps, args.warmup)
        first = first or (train, features)
        table.add_row(
            name, side, f"{train:.1f}", f"{features:.1f}", f"{train / first[0]:.3f}", f"{features / first[1]:.3f}"
        )
    Console().print(table)


if __name__ == "__main__":
    main()
