"""The model zoo: every model exposes ordered, named stages, so cut_at means the same for all."""

import urllib.error

import pytest
import torch

from transferlab.core.config import load_config
from transferlab.core.errors import ConfigError
from transferlab.core.schema import model_stage_names
from transferlab.models import torchvision_backbone
from transferlab.training.runner import Recipe, build_module

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
    "efficientnet_lite0": ["stem", "stage1", "stage2", "stage3", "stage4", "stage5", "top"],
    "efficientnet_lite1": ["stem", "stage1", "stage2", "stage3", "stage4", "stage5", "top"],
    "efficientnet_lite2": ["stem", "stage1", "stage2", "stage3", "stage4", "stage5", "top"],
}


def test_every_model_file_is_in_the_table(repo):
    """Catches: a conf/model file whose stages no test checks (a new family added without its names here)."""
    assert sorted(EXPECTED_STAGES) == sorted(p.stem for p in (repo / "conf" / "model").glob("*.yaml"))


def config_for(repo, model: str, cut: str):
    return load_config(
        "finetune",
        [
            "regime=truncate_freeze",
            f"model={model}",
            f"regime.truncate_freeze.cut_at={cut}",
            f"cut_sweep.cut_at=[{cut}]",
        ],
        root=repo,
    )


@pytest.mark.parametrize("model", list(EXPECTED_STAGES))
def test_every_model_has_named_stages_and_cuts_the_same_way(repo, model):
    """Catches: a model whose stages are not named as its config says (cut_at would mean something else),
    and a registry's stage names (what core.schema checks cut_at against) that disagree with the built model."""
    stages = EXPECTED_STAGES[model]
    cfg = config_for(repo, model, stages[1])
    module = build_module(cfg, Recipe.for_regime(cfg, "truncate_freeze"), 5, epochs=1)
    assert module.net.backbone.stage_names == stages[:2]
    assert module(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    full = build_module(cfg, Recipe.for_regime(cfg, "finetune_all"), 5, epochs=1)
    assert full.net.backbone.stage_names == stages
    assert full.net.head.fc.in_features == full.net.backbone.stage_channels[stages[-1]]
    assert model_stage_names(cfg.model) == stages


@pytest.mark.parametrize("model", ["small_resnet", "small_vgg", "resnet18"])
def test_unknown_cut_at_lists_the_model_stage_names(repo, model):
    """Catches: a cut point that is silently ignored or only fails deep inside training."""
    with pytest.raises(
        ConfigError, match=f"not a stage of model {model} \\(allowed: {', '.join(EXPECTED_STAGES[model])}\\)"
    ):
        config_for(repo, model, "nowhere")


def test_offline_imagenet_weights_say_which_file_to_place_where(monkeypatch, tmp_path):
    """Catches: a traceback (or a hang) instead of one line naming the file and the folder, offline."""
    import torchvision.models._api as api

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ValueError) as err:
        torchvision_backbone("resnet18", weights="imagenet")
    message = str(err.value)
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert f"place it in {tmp_path / 'hub' / 'checkpoints'}/" in message and "\n" not in message


def test_imagenet_weights_are_loaded_through_torchvisions_weights_api(monkeypatch):
    """With the file 'in the cache', the backbone gets exactly those weights. Catches: weights that are
    downloaded but not loaded, or loaded into the wrong stages."""
    import torchvision.models._api as api
    from torchvision.models import resnet18

    reference = resnet18().state_dict()
    for key, value in reference.items():
        if value.is_floating_point():
            reference[key] = torch.full_like(value, 0.5)
    seen = []

    def load_state_dict_from_url(url, *args, **kwargs):
        seen.append(url)
        return reference

    monkeypatch.setattr(api, "load_state_dict_from_url", load_state_dict_from_url)
    backbone = torchvision_backbone("resnet18", weights="imagenet")
    assert seen == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    assert torch.all(backbone.layer1[0].conv1.weight == 0.5)


def test_pretrain_source_imagenet_needs_a_family_with_imagenet_weights(repo):
    """Catches: ImageNet weights asked for a model whose family has none, found only when the stage runs."""
    with pytest.raises(ConfigError) as err:
        load_config("pretrain", ["pretrain.source=imagenet"], root=repo)
    assert str(err.value) == (
        "pretrain.source=imagenet is not available for model=small_resnet (allowed: pipeline, file; imagenet needs "
        "a model of the efficientnet_lite or torchvision_backbone family, e.g. model=efficientnet_lite0)"
    )
