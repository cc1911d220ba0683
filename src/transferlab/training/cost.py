"""What a regime costs, counted rather than timed: FLOPs and parameters (``core.artifacts.Cost``).

Wall seconds depend on the machine and on what else runs (this machine's speed swings by a third
within a day, BENCHMARKS.md), so a recommendation made on them would not be reproducible, and a
DVC output holding them would change on every run. FLOPs are counted with torch's
``FlopCounterMode`` on one image (2 per multiply-add of convolutions and matrix products);
measured seconds are logged to MLflow beside them (``train_seconds`` on every run).

- training: 3x the forward FLOPs (forward + backward) for every image of every optimizer step,
  plus one forward pass over the validation images per epoch. A frozen backbone's part is
  computed once, for the cached features of the training rows and the validation images; only
  the head trains. Pretraining is not counted: every pretrained regime starts from the same
  network, which the user has already.
- inference: the network kept (a truncated backbone and the head) on one image.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from transferlab.core.artifacts import Cost
from transferlab.training.module import Classifier


def _flops(network: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(x)
    return int(counter.get_total_flops())


def regime_cost(
    module: Classifier,
    image_size: int,
    cached: bool,
    train_rows: int,
    n_val: int,
    steps: int,
    batch_size: int,
    epochs: int,
) -> Cost:
    """The cost of training ``module`` (built for the regime, any weights) for ``steps`` steps of
    ``batch_size`` and of one image's inference with it."""
    was_training = module.training
    module.eval()
    image = torch.zeros(1, 3, image_size, image_size)
    backbone = _flops(module.net.backbone, image)
    head = _flops(module.net.head, torch.zeros(1, module.net.backbone.out_channels))
    module.train(was_training)
    trained = steps * batch_size
    if cached:
        train = backbone * (train_rows + n_val) + 3 * head * trained + head * n_val * epochs
    else:
        train = 3 * (backbone + head) * trained + (backbone + head) * n_val * epochs
    kept = [*module.net.backbone.parameters(), *module.net.head.parameters()]
    return Cost(
        train_flops=float(train),
        trainable_params=sum(p.numel() for p in kept if p.requires_grad),
        inference_params=sum(p.numel() for p in kept),
        inference_flops=float(backbone + head),
    )
