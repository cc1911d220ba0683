"""Trainer configs (conf/trainer/): every one composes, and the module switches do what they say."""

import pytest
import torch
from omegaconf import OmegaConf

from transferlab.config import load_config, options
from transferlab.finetune import build_module
from transferlab.training import resolve_precision, trainer_settings


@pytest.mark.parametrize("name", ["cpu", "gpu", "ddp", "ddp_multinode"])
def test_every_trainer_config_has_the_documented_keys(repo, name):
    assert name in options(repo, "trainer")
    cfg = load_config("pretrain", [f"trainer={name}"], root=repo)
    assert {"accelerator", "devices", "precision", "channels_last", "compile"} <= set(cfg.trainer)
    if name.startswith("ddp"):
        assert cfg.trainer.strategy == "ddp" and "sync_batchnorm" in cfg.trainer  # not ddp_spawn
    if name == "ddp_multinode":
        assert cfg.trainer.num_nodes > 1


def test_precision_auto_is_32_bit_on_cpu_and_mixed_on_gpu(monkeypatch):
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"  # an explicit choice is kept
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", "auto") == "16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", "gpu") == "bf16-mixed"


def test_channels_last_and_compile_switches_reach_the_module(repo):
    cfg = load_config("finetune", ["quadrant=large_different", "trainer=cpu", "trainer.channels_last=true",
                                   "trainer.compile=true"], root=repo)
    module = build_module(cfg, 5)
    names_before = set(module.state_dict())
    kwargs = trainer_settings(cfg, module)
    assert "channels_last" not in kwargs and "compile" not in kwargs and kwargs["precision"] == "32-true"
    conv = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert module.net._compiled_call_impl is not None  # nn.Module.compile(): compiled in place
    assert set(module.state_dict()) == names_before  # checkpoints keep their parameter names
    cfg_off = load_config("finetune", ["quadrant=large_different"], root=repo)
    plain = build_module(cfg_off, 5)
    trainer_settings(cfg_off, plain)
    assert plain.net._compiled_call_impl is None and not plain.channels_last
