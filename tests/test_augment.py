import numpy as np
import pytest
from omegaconf import OmegaConf

from transferlab.augment import augmented_copies, build_pipeline
from transferlab.config import ConfigError, load_config


def images(n=6):
    return np.random.default_rng(0).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def test_pipeline_is_the_configured_ordered_list(repo):
    cfg = load_config("augment", [], root=repo)
    pipeline = build_pipeline(cfg.augment.transforms, seed=0)
    names = [type(t).__name__ for t in pipeline.transforms]
    assert names == [t._target_.rsplit(".", 1)[1] for t in cfg.augment.transforms]


def test_seeded_copies_are_reproducible_and_augmented(repo):
    cfg = load_config("augment", [], root=repo)
    x = images()
    a = augmented_copies(x, build_pipeline(cfg.augment.transforms, seed=3), copies=2)
    b = augmented_copies(x, build_pipeline(cfg.augment.transforms, seed=3), copies=2)
    assert a.shape == (12, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a[:6], x) and not np.array_equal(a[:6], a[6:])


def test_bad_transform_is_one_clear_error():
    bad = OmegaConf.create([{"_target_": "albumentations.NoSuchTransform"}])
    with pytest.raises(ConfigError, match="cannot build augmentation pipeline"):
        build_pipeline(bad)


def test_negative_copies_rejected(repo):
    with pytest.raises(ConfigError, match=r"augment.copies=-1 is not allowed \(must be an integer >= 0\)"):
        load_config("augment", ["augment.copies=-1"], root=repo)
