"""`pretrain.source: file`: your own weights, as a backbone state dict, a torchvision/timm-style state dict
of the whole model or a Lightning checkpoint; keys matched strictly; the file pinned by its sha256."""

from __future__ import annotations

import hashlib
import json
from typing import Any, cast

import pytest
import torch
from omegaconf import OmegaConf

from helpers import REPO
from transferlab.core.errors import ConfigError
from transferlab.models import build_backbone
from transferlab.models._weights import backbone_from_file

SMALL = {
    "name": "small_resnet",
    **cast(dict[str, Any], OmegaConf.to_container(OmegaConf.load(REPO / "conf/model/small_resnet.yaml"))),
}
RESNET18 = {
    "name": "resnet18",
    **cast(dict[str, Any], OmegaConf.to_container(OmegaConf.load(REPO / "conf/model/resnet18.yaml"))),
}


def random_backbone_state(seed: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = build_backbone(SMALL, 32).state_dict()
    return {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v for k, v in state.items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_backbone_state_dict_and_a_lightning_checkpoint_load_exactly(tmp_path):
    """Catches: weights silently left at their random init (a prefix not stripped, a non-strict load),
    and a Lightning checkpoint's head or optimizer state mistaken for the backbone."""
    state = random_backbone_state()
    plain = tmp_path / "backbone.pt"
    torch.save(state, plain)
    assert same(backbone_from_file(SMALL, 32, plain).state_dict(), state)

    lightning = tmp_path / "epoch=3.ckpt"
    torch.save(
        {
            "epoch": 3,
            "global_step": 120,
            "state_dict": {
                **{f"net.backbone.{k}": v for k, v in state.items()},
                "net.head.fc.weight": torch.zeros(5, 128),
                "net.head.fc.bias": torch.zeros(5),
            },
            "hyper_parameters": {"lr": 0.01},
        },
        lightning,
    )
    assert same(backbone_from_file(SMALL, 32, lightning).state_dict(), state)


def test_a_torchvision_state_dict_of_the_whole_model_loads_into_the_backbone(tmp_path):
    """Catches: a torchvision/timm-style file (conv1/bn1/layer*/fc keys) refused, or loaded into nothing."""
    from torchvision.models import get_model

    torch.manual_seed(5)
    model = get_model("resnet18", weights=None, num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), path)
    backbone = backbone_from_file(RESNET18, 32, path).state_dict()
    assert torch.equal(backbone["stem.0.weight"], model.conv1.weight)
    assert torch.equal(backbone["layer4.1.bn2.running_var"], model.layer4[1].bn2.running_var)
    assert torch.equal(backbone["layer1.0.conv2.weight"], model.layer1[0].conv2.weight)


@pytest.mark.parametrize(
    "defect,message",
    [
        ("missing", r"does not fit the small_resnet backbone .*: 1 missing keys \(stage3\.\S+\)$"),
        ("unexpected", r"does not fit the small_resnet backbone .*: 1 unexpected keys \(extra\.weight\)$"),
        ("shape", r"1 tensors of another shape, e\.g\. stem\.0\.weight \(1, 2\) where the model has \(32, 3, 3, 3\)"),
        ("not_torch", r"not a torch state dict or checkpoint"),
        ("no_key_fits", r"no key fits model=small_resnet \(the file's first keys: fc\.weight\)"),
    ],
)
def test_weights_that_do_not_fit_fail_in_one_line_naming_the_keys(tmp_path, defect, message):
    """Catches: a partial load (missing keys left random), extra keys ignored, a shape error as a
    traceback, and a non-checkpoint file loaded as code."""
    state = random_backbone_state()
    path = tmp_path / "weights.pt"
    if defect == "missing":
        state.pop(next(k for k in state if k.startswith("stage3.")))
    elif defect == "unexpected":
        state["extra.weight"] = torch.zeros(2)
    elif defect == "shape":
        state["stem.0.weight"] = torch.zeros(1, 2)
    elif defect == "no_key_fits":
        state = {"fc.weight": torch.zeros(2, 2)}
    if defect == "not_torch":
        path.write_text("these are not weights\n")
    else:
        torch.save(state, path)
    with pytest.raises(ConfigError, match=message) as failed:
        backbone_from_file(SMALL, 32, path)
    assert "\n" not in str(failed.value)


def test_the_pretrain_stage_takes_your_weights_pinned_by_sha256(stage_project, tmp_path):
    """Catches: `pretrain.source: file` training anyway or writing other weights, the file not pinned
    (another file under the same name accepted), and a wrong sha256 found only after work was done."""
    from transferlab import pretrain

    state = random_backbone_state(7)
    weights = tmp_path / "mine.pt"
    torch.save(state, weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    args = ["pretrain.source=file", f"pretrain.weights={weights}"]
    with pytest.raises(ConfigError, match=rf"has sha256 {digest}, pretrain\.weights_sha256 says 0{{64}}"):
        pretrain.main([*args, f"pretrain.weights_sha256={'0' * 64}"])
    assert not (stage_project / "models").exists()
    with pytest.raises(ConfigError, match=r"pretrain\.weights=\S+nothing\.pt: no such file"):
        pretrain.main(
            ["pretrain.source=file", f"pretrain.weights={tmp_path / 'nothing.pt'}", f"pretrain.weights_sha256={digest}"]
        )

    pretrain.main([*args, f"pretrain.weights_sha256={digest}"])
    saved = torch.load(stage_project / "models" / "pretrain" / "backbone.pt", weights_only=True)
    assert same(saved, state)
    meta = json.loads((stage_project / "models" / "pretrain" / "meta.json").read_text())
    assert meta["source"] == "file" and meta["weights_sha256"] == digest and meta["weights_file"] == "mine.pt"
    assert str(tmp_path) not in json.dumps(meta), "no absolute path in a DVC output"


def test_weights_params_are_checked_before_any_work(stage_project):
    """Catches: a weights file given while the source is the pipeline's own (silently unused), and
    `source: file` without a file or a proper sha256."""
    from transferlab.core.config import load_config

    with pytest.raises(ConfigError, match=r"pretrain.weights='x.pt' is set but pretrain.source=pipeline"):
        load_config("pretrain", ["pretrain.weights=x.pt"])
    with pytest.raises(ConfigError, match=r"pretrain.source=file needs pretrain.weights"):
        load_config("pretrain", ["pretrain.source=file"])
    with pytest.raises(ConfigError, match=r"pretrain.weights_sha256='abc' is not allowed .*sha256sum x.pt"):
        load_config("pretrain", ["pretrain.source=file", "pretrain.weights=x.pt", "pretrain.weights_sha256=abc"])
