"""The model zoo: every model exposes ordered, named stages, so cut_at means the same for all."""

import urllib.error

import pytest
import torch

from transferlab.config import ConfigError, load_config
from transferlab.finetune import build_module
from transferlab.models import TORCHVISION_ARCHS, TorchvisionBackbone

EXPECTED_STAGES = {
    "small_vgg": ["block1", "block2", "block3", "block4"],
    "small_resnet": ["stem", "stage1", "stage2", "stage3"],
    "small_cnn": ["block1", "block2", "fc1", "fc2"],
    "resnet18": ["stem", "layer1", "layer2", "layer3", "layer4"],
    "resnet34": ["stem", "layer1", "layer2", "layer3", "layer4"],
    "resnet50": ["stem", "layer1", "layer2", "layer3", "layer4"],
    "vgg11_bn": ["block1", "block2", "block3", "block4", "block5"],
    "mobilenet_v3_small": ["stem", "stage1", "stage2", "stage3", "stage4", "top"],
    "efficientnet_b0": ["stem", "stage1", "stage2", "stage3", "stage4", "stage5", "top"],
}


@pytest.mark.parametrize("model", list(EXPECTED_STAGES))
def test_every_model_has_named_stages_and_cuts_the_same_way(repo, model):
    stages = EXPECTED_STAGES[model]
    cfg = load_config("finetune", ["quadrant=small_different", f"model={model}",
                                   f"quadrants.small_different.cut_at={stages[1]}"], root=repo)
    module = build_module(cfg, 5)
    assert module.net.backbone.stage_names == stages[:2]
    assert module(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    full = build_module(load_config("finetune", ["quadrant=small_similar", f"model={model}"], root=repo), 5)
    assert full.net.backbone.stage_names == stages
    assert full.net.head.fc.in_features == full.net.backbone.stage_channels[stages[-1]]


@pytest.mark.parametrize("model", ["small_resnet", "small_vgg", "resnet18"])
def test_unknown_cut_at_lists_the_model_stage_names(repo, model):
    cfg = load_config("finetune", ["quadrant=small_different", f"model={model}",
                                   "quadrants.small_different.cut_at=nowhere"], root=repo)
    with pytest.raises(ConfigError, match=f"unknown cut_at 'nowhere' \\(allowed: {', '.join(EXPECTED_STAGES[model])}\\)"):
        build_module(cfg, 5)


def test_offline_imagenet_weights_say_which_file_to_place_where(monkeypatch, tmp_path):
    import torchvision.models._api as api

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ValueError) as err:
        TorchvisionBackbone("resnet18", weights="imagenet")
    message = str(err.value)
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert f"place it in {tmp_path / 'hub' / 'checkpoints'}/" in message and "\n" not in message


def test_imagenet_weights_are_loaded_through_torchvisions_weights_api(monkeypatch):
    """With the file 'in the cache', the backbone gets exactly those weights."""
    import torchvision.models._api as api
    from torchvision.models import resnet18

    reference = resnet18().state_dict()
    for key, value in reference.items():
        if value.is_floating_point():
            reference[key] = torch.full_like(value, 0.5)
    seen = []
    monkeypatch.setattr(api, "load_state_dict_from_url", lambda url, *a, **k: seen.append(url) or reference)
    backbone = TorchvisionBackbone("resnet18", weights="imagenet")
    assert seen == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    assert torch.all(backbone.layer1[0].conv1.weight == 0.5)


def test_pretrain_source_imagenet_needs_a_torchvision_model(tmp_path):
    import subprocess
    import sys

    from conftest import copy_project, project_env

    project = copy_project(tmp_path / "p")
    done = subprocess.run([sys.executable, "-m", "transferlab.pretrain", "pretrain.source=imagenet"], cwd=project,
                          env=project_env(), capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: pretrain.source=imagenet needs a torchvision model, not model=small_resnet "
        f"(allowed: {', '.join(TORCHVISION_ARCHS)})")
