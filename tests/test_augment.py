import numpy as np
import pytest
from omegaconf import OmegaConf

from transferlab.augment import build_pipeline, write_training_rows
from transferlab.config import ConfigError, load_config


def images(n=6):
    return np.random.default_rng(0).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def test_pipeline_is_the_configured_ordered_list(repo):
    cfg = load_config("augment", [], root=repo)
    pipeline = build_pipeline(cfg.augment.transforms, seed=0)
    names = [type(t).__name__ for t in pipeline.transforms]
    assert names == [t._target_.rsplit(".", 1)[1] for t in cfg.augment.transforms]


def test_seeded_copies_are_reproducible_and_augmented(repo, tmp_path):
    cfg = load_config("augment", [], root=repo)
    x, y = images(), np.arange(6)

    def written(name):
        write_training_rows(tmp_path / name, x, y, build_pipeline(cfg.augment.transforms, seed=3), copies=2)
        return np.load(tmp_path / name / "x_train.npy"), np.load(tmp_path / name / "y_train.npy")

    (a, labels), (b, _) = written("a"), written("b")
    assert a.shape == (18, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(labels, np.tile(y, 3))
    assert np.array_equal(a[:6], x), "the originals come first"
    assert not np.array_equal(a[6:12], x) and not np.array_equal(a[6:12], a[12:])


def test_bad_transform_is_one_clear_error():
    bad = OmegaConf.create([{"_target_": "albumentations.NoSuchTransform"}])
    with pytest.raises(ConfigError, match="cannot build augmentation pipeline"):
        build_pipeline(bad)


def test_negative_copies_rejected(repo):
    with pytest.raises(ConfigError, match=r"augment.copies=-1 is not allowed \(must be an integer >= 0\)"):
        load_config("augment", ["augment.copies=-1"], root=repo)


def test_on_the_fly_augmentation_is_seeded_and_differs_between_workers(repo):
    """Same seed -> same augmented batches; two DataLoader workers do not repeat each other."""
    import torch
    from torch.utils.data import DataLoader

    from transferlab.data import ImageArrayDataset
    from transferlab.training import seed_worker_transform

    cfg = load_config("augment", [], root=repo)
    x, y = images(8), np.arange(8)

    def batches(seed, workers=0):
        dataset = ImageArrayDataset(x, y, build_pipeline(cfg.augment.transforms, seed=seed))
        loader = DataLoader(dataset, batch_size=4, shuffle=False, num_workers=workers,
                            worker_init_fn=seed_worker_transform, generator=torch.Generator().manual_seed(seed))
        return [b[0] for b in loader]

    first, again = batches(5), batches(5)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    in_workers, in_workers_again = batches(5, workers=2), batches(5, workers=2)
    assert all(torch.equal(a, b) for a, b in zip(in_workers, in_workers_again))
    # The same image through two workers' pipelines: compare worker 0's and worker 1's draws.
    dataset = ImageArrayDataset(np.repeat(x[:1], 8, axis=0), y, build_pipeline(cfg.augment.transforms, seed=5))
    loader = DataLoader(dataset, batch_size=4, num_workers=2, worker_init_fn=seed_worker_transform,
                        generator=torch.Generator().manual_seed(5))
    worker0, worker1 = [b[0] for b in loader]
    assert not torch.equal(worker0, worker1), "workers must not draw identical augmentations"


def test_train_per_class_keeps_the_same_originals_in_every_augmented_copy(tmp_path, monkeypatch):
    from transferlab.data import save_split, write_json
    from transferlab.training_data import training_sets

    (tmp_path / "conf").mkdir()
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    monkeypatch.chdir(tmp_path)
    originals = 6
    y = np.array([0, 1, 0, 1, 0, 1])
    x = np.zeros((originals * 3, 2, 2, 3), dtype=np.uint8)
    x[:, 0, 0, 0] = np.tile(np.arange(originals), 3)  # pixel = index of the original image
    save_split(tmp_path / "aug/source", "train", x, np.tile(y, 3))
    write_json(tmp_path / "aug/source/meta.json", {"copies": 2, "originals": originals, "on_the_fly": False})
    save_split(tmp_path / "raw/source", "val", x[:2], y[:2])
    cfg = OmegaConf.create({"seed": 0, "paths": {"raw": "raw", "augmented": "aug"}})
    train, _ = training_sets(cfg, "source", train_per_class=2)
    kept = sorted(int(train.images[i][0, 0, 0]) for i in range(len(train)))
    assert kept == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]  # first 2 of each class, original + 2 copies
    assert np.bincount(train.labels.numpy()).tolist() == [6, 6]
