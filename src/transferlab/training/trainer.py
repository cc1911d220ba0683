"""The Lightning Trainer's arguments from a conf/trainer file, and its two module switches."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from transferlab.core.config import as_dict
from transferlab.training.module import Classifier


def quiet_lightning() -> None:
    """Silence what a pipeline of ~70 fits would print ~70 times, so a real warning stands out."""
    import logging
    import warnings

    # Lightning's info lines at every fit: the device summary ("GPU available: False ..."), an advert
    # for its cloud logger ("Tip: ... litlogger") and "`Trainer.fit` stopped: `max_epochs` reached".
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    # A frozen backbone is in eval mode on purpose (BatchNorm statistics must not move).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    # Lightning 2.6.6's pytree helper uses an API torch 2.14 deprecated; nothing to do on our side.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # A resumed cell's checkpoint folder holds the checkpoints it resumes from.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


# Not user knobs: what every training stage needs from the Trainer.
FIXED = {
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
    "use_distributed_sampler": False,  # training.loaders shards (and seeds) by itself
    "log_every_n_steps": 1,  # metrics are logged once per epoch anyway
}


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16-mixed on GPUs that support it (else 16-mixed), 32-true on CPU."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if not on_gpu:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"


def trainer_settings(trainer_cfg: DictConfig, module: Classifier, single_device: bool = False) -> dict[str, Any]:
    """The Trainer's kwargs; applies the module switches.

    ``channels_last``: weights and input batches in NHWC memory format (on the 2-core CPU the
    default model trains 1.46x faster with it, 42.9 vs 62.4 ms per batch of 64; on GPUs it feeds
    tensor cores). ``compile``: ``torch.compile`` the network in place (parameter names, and so
    checkpoints, are unchanged). ``single_device``: one process whatever the config says (a
    head on cached features is too small to share out).
    """
    kwargs = as_dict(trainer_cfg)
    for own_key in ("name", "_target_", "cell_processes"):  # ours, not the Trainer's
        kwargs.pop(own_key, None)
    if kwargs.pop("channels_last", False):
        module.use_channels_last()
    if kwargs.pop("compile", False):
        module.net.compile()
    kwargs["precision"] = resolve_precision(str(kwargs.get("precision", "32-true")), str(kwargs.get("accelerator")))
    if single_device:
        kwargs.update(devices=1, num_nodes=1, strategy="auto", sync_batchnorm=False)
    return {**kwargs, **FIXED}
