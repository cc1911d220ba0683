"""Augmentation pipelines: built from conf/augment as an ordered albumentations Compose, checked
argument by argument, chosen per dataset; copies seeded; on-the-fly views seeded per epoch."""

import numpy as np
import pytest
import torch

from transferlab.augment import pipeline_name, write_training_rows
from transferlab.core.config import load_config
from transferlab.core.errors import ConfigError
from transferlab.data.augmentation import build_pipeline, check_transform, pipeline_config


def images(n=6):
    return np.random.default_rng(0).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def test_pipeline_is_the_configured_ordered_list(repo):
    """Catches: transforms dropped or reordered on the way from the YAML list to the Compose."""
    transforms = pipeline_config(repo, "default")
    pipeline = build_pipeline(transforms, seed=0)
    names = [type(t).__name__ for t in pipeline.transforms]
    assert names == [t["_target_"].rsplit(".", 1)[1] for t in transforms] and len(names) == 4


def test_each_dataset_gets_its_own_pipeline_and_digits_are_not_flipped(repo):
    """Catches: mirrored digits (a flipped 2 is not a 2), or one pipeline for every dataset."""
    cfg = load_config("augment", [], root=repo)
    assert pipeline_name(cfg, repo, "source") == "default"
    cfg = load_config("augment", ["experiment=mnist_svhn_fashion"], root=repo)
    assert pipeline_name(cfg, repo, "source") == pipeline_name(cfg, repo, "small_similar") == "no_flip"
    assert pipeline_name(cfg, repo, "small_different") == "default"  # clothes survive a mirror image
    no_flip = [t["_target_"] for t in pipeline_config(repo, "no_flip")]
    assert not any("Flip" in t or "Transpose" in t for t in no_flip)


def test_seeded_copies_are_reproducible_and_augmented(repo, tmp_path):
    """Catches: unseeded copies (DVC outputs that change on every run) or copies equal to the originals."""
    transforms = pipeline_config(repo, "default")
    x, y = images(), np.arange(6)

    def written(name):
        (tmp_path / name).mkdir()
        write_training_rows(tmp_path / name, x, y, build_pipeline(transforms, seed=3), copies=2)
        return np.load(tmp_path / name / "x_train.npy"), np.load(tmp_path / name / "y_train.npy")

    (a, labels), (b, _) = written("a"), written("b")
    assert a.shape == (18, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(labels, np.tile(y, 3))
    assert np.array_equal(a[:6], x), "the originals come first"
    assert not np.array_equal(a[6:12], x) and not np.array_equal(a[6:12], a[12:])


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"_target_": "albumentations.NoSuchTransform"}, "is not an albumentations transform"),
        ({"_target_": "os.system"}, "is not an albumentations transform"),
        (
            {"_target_": "albumentations.HorizontalFlip", "prob": 0.5},
            "HorizontalFlip has no argument 'prob' (allowed: p)",
        ),
        ({"_target_": "albumentations.Affine", "rotation": 5}, "Affine has no argument 'rotation'"),
    ],
)
def test_bad_transform_is_one_clear_error(entry, message):
    """Catches: a typo albumentations would only warn about and then ignore (`prob` for `p`)."""
    with pytest.raises(ConfigError) as err:
        check_transform(entry, "conf/augment/x.yaml transforms[0]")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_on_the_fly_augmentation_is_seeded_per_epoch_and_per_worker(repo):
    """Catches: an epoch's views that depend on the previous epochs (a resumed fit would differ), or two
    DataLoader workers drawing the same augmentations."""
    from torch.utils.data import DataLoader

    from transferlab.data.arrays import ImageArrayDataset, collate_images
    from transferlab.training.loaders import EpochSampler

    transforms = pipeline_config(repo, "default")
    x, y = images(8), np.arange(8)

    def epochs(which: list[int], workers: int = 0) -> list[torch.Tensor]:
        dataset = ImageArrayDataset(x, y, build_pipeline(transforms), seed=5)
        sampler = EpochSampler(8, seed=0)
        loader = DataLoader(dataset, batch_size=8, sampler=sampler, collate_fn=collate_images, num_workers=workers)
        out = []
        for epoch in which:
            sampler.set_epoch(epoch)
            out.append(next(iter(loader))[0])
        return out

    straight = epochs([0, 1, 2])
    assert torch.equal(epochs([2])[0], straight[2]), "epoch 2 alone must equal epoch 2 after 0 and 1"
    assert not torch.equal(straight[1], straight[2])
    in_workers = epochs([0, 1], workers=2)
    assert torch.equal(epochs([0, 1], workers=2)[1], in_workers[1])


def test_train_per_class_keeps_the_same_originals_in_every_augmented_copy(tmp_path, monkeypatch):
    """Catches: a subset that takes other images in the copies than among the originals."""
    from omegaconf import OmegaConf

    from transferlab.core.files import write_json
    from transferlab.data.arrays import save_split
    from transferlab.data.training_sets import training_sets

    (tmp_path / "conf").mkdir()
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    monkeypatch.chdir(tmp_path)
    originals = 6
    y = np.array([0, 1, 0, 1, 0, 1])
    x = np.zeros((originals * 3, 2, 2, 3), dtype=np.uint8)
    x[:, 0, 0, 0] = np.tile(np.arange(originals), 3)  # pixel = index of the original image
    save_split(tmp_path / "aug/source", "train", x, np.tile(y, 3))
    write_json(
        tmp_path / "aug/source/meta.json",
        {"classes": ["a", "b"], "copies": 2, "originals": originals, "pipeline": "none"},
    )
    (tmp_path / "aug/source/pipeline.yaml").write_text("name: none\ntransforms: []\n")
    save_split(tmp_path / "raw/source", "val", x[:2], y[:2])
    cfg = OmegaConf.create(
        {"seed": 0, "paths": {"raw": "raw", "augmented": "aug", "downloads": "dl", "models": "m", "reports": "r"}}
    )
    train, _ = training_sets(cfg, "source", materialised=True, train_per_class=2)
    kept = sorted(int(train.images[i][0, 0, 0]) for i in range(len(train)))
    assert kept == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]  # first 2 of each class, original + 2 copies
    assert np.bincount(train.labels.numpy()).tolist() == [6, 6]
    originals_only, _ = training_sets(cfg, "source", materialised=False, train_per_class=2)
    assert sorted(int(originals_only.images[i][0, 0, 0]) for i in range(len(originals_only))) == [0, 1, 2, 3]
