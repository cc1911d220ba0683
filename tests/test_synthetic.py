import hashlib
from dataclasses import replace
from typing import Any, cast

import numpy as np
import pytest
from omegaconf import OmegaConf

from helpers import REPO
from transferlab.datasets.synthetic import SHAPES, TEXTURES, RenderParams, make_split, render_class

RENDER = cast(dict[str, Any], OmegaConf.to_container(OmegaConf.load(REPO / "conf/experiment/builtin.yaml").render))
RENDER_ARGS: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in RENDER.items()}
P = RenderParams(image_size=32, **RENDER_ARGS)


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()


def test_same_seed_gives_byte_identical_arrays():
    a = make_split("shapes", ["circle", "star"], 20, [7, 1, 0], P)
    b = make_split("shapes", ["circle", "star"], 20, [7, 1, 0], P)
    assert digest(a[0]) == digest(b[0]) and digest(a[1]) == digest(b[1])


def test_other_seed_gives_other_images():
    a, _ = make_split("shapes", ["circle", "star"], 20, [7, 1, 0], P)
    b, _ = make_split("shapes", ["circle", "star"], 20, [8, 1, 0], P)
    assert digest(a) != digest(b)


def test_split_shape_dtype_and_balanced_shuffled_labels():
    x, y = make_split("textures", list(TEXTURES[:3]), 15, [0], replace(P, image_size=24))
    assert x.shape == (45, 24, 24, 3) and x.dtype == np.uint8
    assert y.dtype == np.int64 and np.bincount(y).tolist() == [15, 15, 15]
    assert not np.all(np.diff(y) >= 0), "labels must be shuffled, not in class blocks"


@pytest.mark.parametrize("family,classes", [("shapes", SHAPES), ("textures", TEXTURES)])
def test_every_class_renders_varied_non_blank_images(family, classes):
    for label in classes:
        x = render_class(family, label, 8, [0, 1], P)
        assert x.std() > 10, f"{label} images are almost flat"
        assert len({digest(img) for img in x}) == 8, f"{label} images repeat"


def test_download_stage_is_deterministic_and_splits_do_not_depend_on_each_other(tmp_path, monkeypatch):
    """Same seed -> byte-identical files; a bigger training split leaves val and test as they were.
    Catches: unseeded generation (DVC outputs that change every run) and splits that share a random stream."""
    from helpers import copy_project
    from transferlab import download

    project = copy_project(tmp_path / "p")
    monkeypatch.chdir(project)
    sizes = [
        "data.source_train_per_class=3",
        "data.small_train_per_class=2",
        "data.large_train_per_class=2",
        "data.val_per_class=2",
        "data.test_per_class=2",
    ]

    def run(*extra):
        download.main([*sizes, *extra])
        return {p.name: digest(np.load(p)) for p in (project / "data/raw/source").glob("*.npy")}

    first, again, bigger = run(), run(), run("data.source_train_per_class=5")
    assert first == again
    assert bigger["x_train.npy"] != first["x_train.npy"]
    assert {k: bigger[k] for k in ("x_val.npy", "x_test.npy", "y_test.npy")} == {
        k: first[k] for k in ("x_val.npy", "x_test.npy", "y_test.npy")
    }


def test_unknown_class_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown shapes class 'blob'.*allowed: circle"):
        render_class("shapes", "blob", 1, [0], P)
