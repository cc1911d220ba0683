"""Trainer configs (conf/trainer/): every one composes, and the module switches do what they say."""

import pytest
import torch

from transferlab.core.config import load_config, options
from transferlab.training.runner import Recipe, build_module
from transferlab.training.trainer import resolve_precision, trainer_settings


@pytest.mark.parametrize("name", ["cpu", "gpu", "ddp", "ddp_multinode"])
def test_every_trainer_config_has_the_documented_keys(repo, name):
    """Catches: a trainer file that no longer composes or validates against the schema."""
    assert name in options(repo, "trainer")
    cfg = load_config("pretrain", [f"trainer={name}"], root=repo)
    assert {"accelerator", "devices", "precision", "channels_last", "compile"} <= set(cfg.trainer)
    if name.startswith("ddp"):
        assert cfg.trainer.strategy == "ddp" and "sync_batchnorm" in cfg.trainer  # not ddp_spawn
    if name == "ddp_multinode":
        assert cfg.trainer.num_nodes > 1


def test_precision_auto_is_32_bit_on_cpu_and_mixed_on_gpu(monkeypatch):
    """Catches: `precision: auto` picking half precision on a CPU, or fp16 on a GPU with bf16."""
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"  # an explicit choice is kept
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", "auto") == "16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", "gpu") == "bf16-mixed"


def test_channels_last_and_compile_switches_reach_the_module(repo, monkeypatch):
    """Catches: switches passed to the Trainer (which rejects them) or silently dropped: `compile` must call
    torch.compile once on the network (a spy, so no compilation runs), and not at all when off."""
    compiled = []

    def spy(fn, *args, **kwargs):
        compiled.append(fn)
        return fn

    monkeypatch.setattr(torch, "compile", spy)
    cfg = load_config(
        "finetune", ["regime=scratch", "trainer=cpu", "trainer.channels_last=true", "trainer.compile=true"], root=repo
    )
    module = build_module(cfg, Recipe.for_regime(cfg, "scratch"), 5, epochs=1)
    names_before = set(module.state_dict())
    kwargs = trainer_settings(cfg.trainer, module)
    assert "channels_last" not in kwargs and "compile" not in kwargs and kwargs["precision"] == "32-true"
    conv = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert len(compiled) == 1  # nn.Module.compile(): compiled in place, once
    assert set(module.state_dict()) == names_before  # checkpoints keep their parameter names
    cfg_off = load_config("finetune", ["regime=scratch", "trainer.channels_last=false"], root=repo)
    plain = build_module(cfg_off, Recipe.for_regime(cfg_off, "scratch"), 5, epochs=1)
    trainer_settings(cfg_off.trainer, plain)
    assert len(compiled) == 1 and not plain.channels_last


def test_cached_heads_train_on_one_device_whatever_the_trainer_says(repo):
    """Catches: a head on cached features shared out over DDP processes (each would train on everything)."""
    cfg = load_config("finetune", ["regime=freeze_all", "trainer=ddp"], root=repo)
    module = build_module(cfg, Recipe.for_regime(cfg, "freeze_all"), 5, epochs=1)
    kwargs = trainer_settings(cfg.trainer, module, single_device=True)
    assert (kwargs["devices"], kwargs["strategy"], kwargs["num_nodes"]) == (1, "auto", 1)
