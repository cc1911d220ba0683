"""The download stage on real images, without a network: image folders (with every kind of
bad input), archives (including hostile ones), files in torchvision's own on-disk formats,
and the one-line failure of a real experiment offline. Every fixture is generated here."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from helpers import project_env
from transferlab import download
from transferlab.core.config import load_config
from transferlab.core.errors import ConfigError
from transferlab.core.names import QUADRANTS, SPLITS
from transferlab.datasets import prepare
from transferlab.datasets.sources import safe_extract

COUNTS = {
    "data.source_train_per_class": 6,
    "data.small_train_per_class": 3,
    "data.large_train_per_class": 5,
    "data.val_per_class": 2,
    "data.test_per_class": 2,
}


# --------------------------------------------------------------------------- fixtures


SPLIT_OFFSET = {None: 0, "train": 0, "val": 3, "test": 6}  # not multiples of 9: every file's colour is unique


def colour_of(cls: int, i: int, split: str | None = None) -> tuple[int, int, int]:
    """A unique colour per (class, image, split): files differ, and the red channel encodes the class."""
    return (40 + 60 * cls, 20 + 9 * i + SPLIT_OFFSET[split], 200 - 7 * i)


def write_jpeg(path: Path, colour, size=(48, 36)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=95)
    return path


def image_folder(
    root: Path, per_class: int = 14, classes=("apple", "bird", "cloud"), split: str | None = None, size=(48, 36)
) -> Path:
    """Same colours for the same (class index, image, split) in every folder: another ``size`` gives other bytes."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            folder = root / split / name if split else root / name
            write_jpeg(folder / f"{name}_{i:03d}.jpg", colour_of(c, i, split), size)
    return root


def use_datasets(
    project: Path,
    datasets: dict[str, dict],
    source: str,
    target: str,
    different: str | None = None,
    share_source: bool = False,
    **target_keys,
) -> None:
    """Write conf/dataset/<name>.yaml files and conf/experiment/t.yaml using them. A folder named as both
    source and target gives the similar targets a copy of it with other bytes (unless ``share_source``):
    the same images in source and target are refused (overlap), and these tests are about one dataset."""
    spec = datasets.get(source, {})
    if target == source and not share_source and Path(spec.get("root", "/nonexistent")).is_dir():
        root = Path(spec["root"])
        copy = root.with_name(f"{root.name}_as_target")
        other_bytes_copy(root, copy)
        target = f"{source}_as_target"
        datasets = {**datasets, target: {**spec, "root": str(copy)}}
    for name, spec in datasets.items():
        OmegaConf.save(OmegaConf.create(spec), project / "conf" / "dataset" / f"{name}.yaml")
    different = different or target
    targets = {
        q: {"dataset": target if "similar" in q else different, "size": q.split("_")[0], **target_keys}
        for q in ("small_similar", "small_different", "large_similar", "large_different")
    }
    OmegaConf.save(
        OmegaConf.create({"source": {"dataset": source, **target_keys}, "targets": targets}),
        project / "conf" / "experiment" / "t.yaml",
    )


def other_bytes_copy(root: Path, copy: Path) -> None:
    """``root`` copied with one byte appended to every file: the same pictures (image decoders ignore
    trailing bytes; a broken file stays broken), other sha256s."""
    shutil.copytree(root, copy)
    for path in copy.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with open(path, "ab") as handle:
                handle.write(b"\0")


def folder_dataset(root: Path) -> dict:
    return {"_target_": "transferlab.datasets.sources.ImageFolderSource", "root": str(root)}


def run(*args: str, **counts) -> None:
    download.main(["experiment=t", *[f"{k}={v}" for k, v in {**COUNTS, **counts}.items()], *args])


def card(project: Path, name: str) -> dict:
    return json.loads((project / "data" / "raw" / name / "card.json").read_text())


def arrays(project: Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    folder = project / "data" / "raw" / name
    return np.load(folder / f"x_{split}.npy"), np.load(folder / f"y_{split}.npy")


def pixel_keys(x: np.ndarray) -> set[tuple]:
    return {tuple(int(v) for v in image[16, 16]) for image in x}


# --------------------------------------------------------------------------- folders


def test_flat_folder_is_split_stratified_exactly_and_deterministically(project, tmp_path):
    use_datasets(project, {"pool": folder_dataset(image_folder(tmp_path / "pool"))}, "pool", "pool")
    (tmp_path / "pool" / "apple" / ".DS_Store").write_bytes(b"\0\1junk")
    run()
    info = card(project, "source")
    assert info["classes"] == ["apple", "bird", "cloud"]
    assert info["counts_per_class"] == {
        "train": dict.fromkeys(info["classes"], 6),
        "val": dict.fromkeys(info["classes"], 2),
        "test": dict.fromkeys(info["classes"], 2),
    }
    assert info["ignored_files"] == 1 and info["left_out"] == 0 and info["source"]["kind"] == "folder"
    assert card(project, "small_similar")["counts"] == {"train": 9, "val": 6, "test": 6}
    keys = {}
    for split in SPLITS:
        x, y = arrays(project, "source", split)
        assert x.shape == (len(y), 32, 32, 3) and x.dtype == np.uint8
        keys[split] = pixel_keys(x)
        assert len(keys[split]) == len(y), "every prepared image is a different file"
        for image, label in zip(x, y):  # labels follow the folders: the red channel encodes the class
            assert abs(int(image[16, 16, 0]) - colour_of(int(label), 0)[0]) <= 3
    assert not (keys["train"] & keys["val"]) and not (keys["train"] & keys["test"]) and not (keys["val"] & keys["test"])
    for split in SPLITS:  # checksums in the card are those of the files
        digest = hashlib.sha256((project / "data/raw/source" / f"x_{split}.npy").read_bytes()).hexdigest()
        assert info["sha256"][f"x_{split}.npy"] == digest

    run()
    assert card(project, "source")["sha256"] == info["sha256"], "same seed, same data"
    run("seed=1")
    assert card(project, "source")["sha256"]["x_train.npy"] != info["sha256"]["x_train.npy"]
    assert not (project / "data" / "raw.staging").exists()


def test_split_folders_keep_their_splits_and_null_takes_all(project, tmp_path):
    root = tmp_path / "split"
    for split, n in (("train", 10), ("val", 3), ("test", 4)):
        image_folder(root, per_class=n, split=split, classes=("a", "b"))
    use_datasets(project, {"split": folder_dataset(root)}, "split", "split")
    run(**{"data.test_per_class": "null"})
    info = card(project, "large_similar")
    assert info["counts"] == {"train": 10, "val": 4, "test": 8}
    assert info["splits_drawn_from"] == {"train": "train", "val": "val", "test": "test"}


def test_image_modes_orientation_and_resize_policy(tmp_path):
    def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **kw)
        return buffer.getvalue()

    gray = prepare.decode_bytes(encoded(Image.new("L", (20, 20), 77), "PNG"), 8)[0]
    assert gray.shape == (8, 8, 3) and (gray == 77).all()
    sixteen = Image.fromarray(np.full((10, 10), 32896, dtype=np.uint16))
    assert (prepare.decode_bytes(encoded(sixteen, "PNG"), 8)[0] == 128).all()  # 16-bit scaled, not clipped
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red: composited on white
    assert (prepare.decode_bytes(encoded(rgba, "PNG"), 8)[0] == 255).all()
    palette = Image.new("RGB", (10, 10), (0, 0, 200)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert prepare.decode_bytes(encoded(palette, "GIF"), 8)[0][4, 4].tolist() == [0, 0, 200]
    cmyk = prepare.decode_bytes(encoded(Image.new("CMYK", (16, 16), (255, 0, 0, 0)), "JPEG", quality=100), 8)[0]
    assert cmyk[4, 4, 0] < 30 and cmyk[4, 4, 1] > 225 and cmyk[4, 4, 2] > 225  # cyan
    assert prepare.decode_bytes(encoded(Image.new("1", (9, 9), 1), "PNG"), 4)[0].min() == 255

    # 40 x 20, left half red, right half blue, stored with EXIF orientation 6 (display rotated 90° clockwise):
    # upright it is 20 wide and 40 tall with red on top; shorter side -> 32, centre crop keeps both halves.
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, :20] = (255, 0, 0)
    wide[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    upright = prepare.decode_bytes(encoded(Image.fromarray(wide), "JPEG", quality=100, exif=exif), 32)[0]
    assert upright[4, 28, 0] > 200 and upright[4, 28, 2] < 60, "top right is red once EXIF orientation is applied"
    assert upright[28, 4, 2] > 200 and upright[28, 4, 0] < 60
    plain = prepare.decode_bytes(encoded(Image.fromarray(wide), "JPEG", quality=100), 32)[0]
    assert plain[4, 28, 2] > 200, "without EXIF the same pixels are blue (the check above can fail)"


# --------------------------------------------------------------------------- bad input


def truncated_jpeg(path: Path) -> None:
    write_jpeg(path, (1, 2, 3), size=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD = "image files that do not decode or are no real example"
DEFECTS = {
    "truncated": (lambda root: truncated_jpeg(root / "bird" / "broken.jpg"), "Truncated|truncated|cannot decode"),
    "corrupt": (lambda root: (root / "bird" / "noise.jpg").write_bytes(os.urandom(2000)), "UnidentifiedImageError"),
    "not_an_image": (lambda root: (root / "cloud" / "notes.txt").write_text("hello"), "UnidentifiedImageError"),
    "flat_placeholder": (lambda root: write_jpeg(root / "cloud" / "missing.jpg", (128, 128, 128)), "one flat colour"),
    "thumbnail": (
        lambda root: write_jpeg(root / "bird" / "thumb.jpg", (10, 200, 30), size=(6, 5)),
        "6x5 px, far smaller than image_size 32",
    ),
}
ALL_USED = "data.source_train_per_class=null"  # every file of the source is used, so every file is decoded


def manifest(project: Path, name: str) -> list[dict]:
    import csv

    with open(project / "data/raw" / name / "manifest.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_bad_image_fails_naming_the_file_or_is_left_out_and_listed(project, tmp_path, defect):
    """Catches: a broken file, a one-colour placeholder or a thumbnail used as a training example, a
    traceback instead of one line, and a skipped file that the manifest does not account for."""
    root = image_folder(tmp_path / "pool")
    make, reason = DEFECTS[defect]
    make(root)
    bad = next(p for p in root.rglob("*") if p.is_file() and p.stem[:4] not in ("appl", "bird", "clou"))
    use_datasets(project, {"pool": folder_dataset(root)}, "pool", "pool")
    with pytest.raises(ConfigError, match=BAD) as failed:
        run(ALL_USED)
    assert bad.name in str(failed.value) and "on_bad_image=skip" in str(failed.value)
    assert "\n" not in str(failed.value)
    assert not re.search(r"object at 0x[0-9a-f]+", str(failed.value)), str(failed.value)  # a file, not an address
    assert not (project / "data" / "raw").exists() and not (project / "data" / "raw.staging").exists()

    run(ALL_USED, "data.on_bad_image=skip")
    info = card(project, "source")
    assert info["left_out"] == 1 and info["counts"]["train"] == 3 * 14 - 3 * 4
    [row] = [r for r in manifest(project, "source") if r["file"].endswith(bad.name)]
    assert row["split"] == "" and re.search(reason, row["left_out"]), row


def test_first_paths_and_a_count_when_many_files_are_bad(project, tmp_path):
    """Catches: an error that lists hundreds of files, or only says "some"."""
    root = image_folder(tmp_path / "pool")
    for i in range(8):
        (root / "apple" / f"zz_bad_{i}.jpg").write_bytes(f"not a jpeg {i}".encode())
    use_datasets(project, {"pool": folder_dataset(root)}, "pool", "pool")
    with pytest.raises(ConfigError, match=rf"8 {BAD}.*: .*zz_bad_\d.jpg .*; and 3 more"):
        run(ALL_USED)


def test_only_the_images_kept_are_decoded_and_the_manifest_accounts_for_every_file(project, tmp_path):
    """Catches: decoding every file of a big folder (a broken file nobody uses would stop the run), and a
    manifest whose rows do not point at the right array rows."""
    root = image_folder(tmp_path / "pool", per_class=30)
    unused = root / "apple" / "apple_zz_broken.jpg"
    unused.write_bytes(b"never decoded: not picked with seed 0")
    other = image_folder(tmp_path / "other", size=(40, 40))
    use_datasets(project, {"pool": folder_dataset(root), "other": folder_dataset(other)}, "pool", "other")
    run()  # 6 + 2 + 2 per class of 30 (31 for apple): most files are hashed, not decoded
    rows = manifest(project, "source")
    assert len(rows) == 3 * 30 + 1 and all(len(r["sha256"]) == 64 for r in rows)
    [broken] = [r for r in rows if r["file"].endswith("apple_zz_broken.jpg")]
    assert broken["left_out"] == "not picked", "the broken file was decoded (or picked)"
    assert sum(1 for r in rows if r["split"]) == 3 * 10
    for split in SPLITS:
        x, y = arrays(project, "source", split)
        for r in (r for r in rows if r["split"] == split):
            image = x[int(r["index"])]
            assert ["apple", "bird", "cloud"][int(y[int(r["index"])])] == r["label"]
            assert r["file"] == f"{r['label']}/{Path(r['file']).name}"  # relative to the folder's root
            assert hashlib.sha256((root / r["file"]).read_bytes()).hexdigest() == r["sha256"]
            assert abs(int(image[16, 16, 0]) - colour_of(["apple", "bird", "cloud"].index(r["label"]), 0)[0]) <= 3


def test_the_same_photo_under_two_classes_is_a_label_conflict_naming_both(project, tmp_path):
    """Catches: a conflict reported as leakage ("another split"), or one label silently winning."""
    root = image_folder(tmp_path / "pool")
    shutil.copy(root / "apple" / "apple_003.jpg", root / "bird" / "looks_like_a_bird.jpg")
    use_datasets(project, {"pool": folder_dataset(root)}, "pool", "pool")
    with pytest.raises(
        ConfigError,
        match=r"2 images filed under two classes \(label conflicts\): .*label conflict: the "
        r"same image is filed as apple and bird",
    ) as failed:
        run()
    line = str(failed.value)
    assert line.count("apple_003.jpg") == 1 and line.count("looks_like_a_bird.jpg") == 1, line  # each file once
    run("data.on_bad_image=skip")
    left = [r for r in manifest(project, "source") if r["left_out"].startswith("label conflict")]
    assert sorted(Path(r["file"]).name for r in left) == ["apple_003.jpg", "looks_like_a_bird.jpg"]
    assert all(r["split"] == "" for r in left), "neither copy may be used"


def test_a_duplicate_within_one_split_is_called_a_duplicate(project, tmp_path):
    """Catches: a duplicate in one folder reported as "in another split"."""
    root = image_folder(tmp_path / "pool")
    shutil.copy(root / "cloud" / "cloud_001.jpg", root / "cloud" / "cloud_copy.jpg")
    use_datasets(project, {"pool": folder_dataset(root)}, "pool", "pool")
    with pytest.raises(ConfigError) as failed:
        run()
    assert "1 duplicate images within one split" in str(failed.value) and "same split" in str(failed.value)
    assert "another split" not in str(failed.value)


def test_a_folder_with_val_but_no_test_can_use_val_as_test(project, tmp_path):
    """Catches: test carved out of train (shrinking it) when the user asked for their own val split as test."""
    root = tmp_path / "trainval"
    image_folder(root, per_class=12, split="train", classes=("ant", "bee"))
    image_folder(root, per_class=4, split="val", classes=("ant", "bee"))
    use_datasets(project, {"tv": folder_dataset(root)}, "tv", "tv", test_from="val")
    run("data.test_per_class=null", "data.val_per_class=2")
    info = card(project, "large_similar")
    assert info["splits_drawn_from"] == {"train": "train", "val": "train", "test": "val"}
    assert info["test_from"] == "val" and info["counts"]["test"] == 8 and info["counts"]["val"] == 4
    files = {r["file"] for r in manifest(project, "large_similar") if r["split"] == "test"}
    assert files and all(f.startswith("val/") for f in files)


def test_too_few_images_says_where_they_were_carved_from_and_the_options(project, tmp_path):
    """Catches: an error that names the class but not why (val/test carved out of train) nor the way out."""
    root = image_folder(tmp_path / "pool", per_class=7)
    use_datasets(project, {"pool": folder_dataset(root)}, "pool", "pool")
    with pytest.raises(ConfigError) as failed:
        run()
    message = str(failed.value)
    assert (
        "class 'apple' has 7 usable images in split train of pool, asked for 2 (test) + 2 (val) + 6 (train)" in message
    )
    assert "val and test are carved out of split train because pool has no val or test split" in message
    assert "test_per_class on experiment.source" in message and "test_from: val" in message


def test_scikit_learn_digits_are_real_images_without_a_download(project):
    """Catches: the offline real-image dataset missing, misread (8x8 ink levels) or not stratified."""
    download.main(["experiment=builtin_digits", *[f"{k}={v}" for k, v in COUNTS.items()]])
    info = card(project, "small_different")
    assert info["classes"] == [str(d) for d in range(10)] and info["source"]["kind"] == "sklearn"
    assert info["counts_per_class"]["val"] == dict.fromkeys(info["classes"], 20)  # the experiment's own counts
    x, y = arrays(project, "large_different", "train")
    assert x.shape == (10 * 120, 32, 32, 3) and np.bincount(y).tolist() == [120] * 10
    assert x.max() > 200 and x.min() < 30, "ink levels 0..16 became 0..255"


def test_a_folder_two_quadrants_use_is_scanned_once(tmp_path):
    """Catches: hashing a big folder again for every quadrant that uses it."""
    from transferlab.datasets.sources import ImageFolderSource

    root = image_folder(tmp_path / "pool")
    source = ImageFolderSource(str(root))
    source.fetch(tmp_path)
    reads = []
    original = source.read

    def counted(split):
        reads.append(split)
        return original(split)

    source.read = counted  # type: ignore[method-assign]
    scans = prepare.Scans(pool=None)
    first = scans.get("pool", source, "train")
    assert scans.get("pool", source, "train") is first and reads == ["train"]


def test_leakage_between_split_folders_fails_or_is_dropped_from_train(project, tmp_path):
    root = tmp_path / "split"
    for split in ("train", "test"):
        image_folder(root, per_class=10, split=split, classes=("a", "b"))
    shutil.copy(root / "test" / "b" / "b_004.jpg", root / "train" / "b" / "leaked.jpg")
    use_datasets(project, {"split": folder_dataset(root)}, "split", "split")
    with pytest.raises(
        ConfigError,
        match=r"1 images that are also in another split \(leakage\): .*leaked.jpg "
        r"\(leakage: same content as test/b/b_004.jpg",
    ):
        run()
    run("data.on_bad_image=skip")
    [row] = [r for r in manifest(project, "source") if r["file"].endswith("leaked.jpg")]
    assert row["left_out"].startswith("leakage") and row["split"] == ""
    assert card(project, "source")["counts"] == {"train": 12, "val": 4, "test": 4}


def test_a_target_in_the_source_fails_or_is_left_out_of_the_source_and_train_overlap_is_listed(
    project, tmp_path, capsys
):
    """Catches: the same folder accepted as source and target (pretraining then sees the target's test
    images and every transfer score is inflated), `skip` leaving a target's val/test image in the source,
    and a target's training images shared with the source going unreported."""
    pool = image_folder(tmp_path / "pool", per_class=24)
    other = image_folder(tmp_path / "other", per_class=14, classes=("dog", "egg"), size=(40, 40))
    use_datasets(
        project,
        {"pool": folder_dataset(pool), "other": folder_dataset(other)},
        "pool",
        "pool",
        "other",
        share_source=True,
    )
    with pytest.raises(
        ConfigError,
        match=r"source: \d+ source images that are also in a target's val or test split .*"
        r"\(overlap: same content as (small|large)_similar (val|test) image ",
    ):
        run()
    assert not (project / "data" / "raw").exists()

    run("data.on_bad_image=skip")
    held_out = {
        r["sha256"]
        for q in ("small_similar", "large_similar")
        for r in manifest(project, q)
        if r["split"] in ("val", "test")
    }
    source = manifest(project, "source")
    assert not {r["sha256"] for r in source if r["split"]} & held_out
    left_out = [r for r in source if r["left_out"].startswith("overlap")]
    assert {r["sha256"] for r in left_out} == held_out, "every held-out image the source had, and only those"
    assert card(project, "source")["counts"]["train"] == 6 * 3, "others take their place"

    shared = {r["sha256"] for r in source if r["split"] == "train"}
    expected = [
        (q, r["file"])
        for q in QUADRANTS
        for r in manifest(project, q)
        if r["split"] == "train" and r["sha256"] in shared
    ]
    assert expected, "the similar targets draw training images the source trained on"
    listed = manifest_rows(project / "data" / "raw" / "overlap.csv")
    assert sorted((r["target"], r["target_file"]) for r in listed) == sorted(expected)
    assert not any(r["target"].endswith("different") for r in listed)
    assert (
        f"download: {len(expected)} target training images are also source training images" in capsys.readouterr().out
    )


def test_no_overlap_writes_no_overlap_file(project, tmp_path):
    """Catches: an overlap report for disjoint datasets (a false alarm, and a changed data/raw hash), and
    images of the same colours but other bytes taken for the same content."""
    use_datasets(
        project,
        {
            "a": folder_dataset(image_folder(tmp_path / "a")),
            "b": folder_dataset(image_folder(tmp_path / "b", size=(40, 40))),
        },
        "a",
        "b",
    )
    run()
    assert not (project / "data" / "raw" / "overlap.csv").exists()


def manifest_rows(path: Path) -> list[dict]:
    import csv

    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    "case,message",
    [
        ("empty_class", "empty class folder"),
        ("single_class", "1 class folder(s) ['apple'] (need 2 or more)"),
        (
            "too_few",
            "source: class 'cloud' has 5 usable images in split train of pool, "
            "asked for 2 (test) + 2 (val) + 6 (train)",
        ),
        ("bad_policy", "data.on_bad_image='maybe' is not allowed (allowed: fail, skip)"),
        ("unknown_class", "unknown classes ['pear'] for dataset pool (allowed: apple, bird, cloud)"),
        ("missing_root", "image folder"),
        ("unknown_dataset", "unknown dataset 'nowhere' (allowed: cifar10, cifar100"),
    ],
)
def test_bad_folders_and_settings_fail_with_one_line(project, tmp_path, case, message):
    root = image_folder(tmp_path / "pool", classes=("apple",) if case == "single_class" else ("apple", "bird", "cloud"))
    args = []
    if case == "empty_class":
        (root / "dates").mkdir()
    if case == "too_few":
        for path in sorted((root / "cloud").iterdir())[5:]:
            path.unlink()
    if case == "bad_policy":
        args = ["data.on_bad_image=maybe"]
    spec = folder_dataset(tmp_path / "nothing" if case == "missing_root" else root)
    use_datasets(project, {"pool": spec}, "nowhere" if case == "unknown_dataset" else "pool", "pool")
    if case == "unknown_class":
        experiment = OmegaConf.load(project / "conf/experiment/t.yaml")
        experiment.source.classes = ["apple", "pear"]
        OmegaConf.save(experiment, project / "conf/experiment/t.yaml")
    with pytest.raises(ConfigError) as failed:
        run(*args)
    assert message in str(failed.value) and "\n" not in str(failed.value)


def test_a_failed_run_keeps_the_previous_data_and_leaves_nothing_half_written(project, tmp_path):
    good = image_folder(tmp_path / "good")
    use_datasets(
        project,
        {"good": folder_dataset(good), "bad": folder_dataset(tmp_path / "bad")},
        "good",
        "good",
        different="bad",
    )
    image_folder(tmp_path / "bad", size=(40, 40))
    run()
    before = {p.name: card(project, p.name)["sha256"] for p in (project / "data/raw").iterdir() if p.is_dir()}
    # the third dataset to be prepared fails: the same photo under two classes
    shutil.copy(tmp_path / "bad" / "apple" / "apple_000.jpg", tmp_path / "bad" / "bird" / "zz.jpg")
    with pytest.raises(ConfigError, match="label conflict"):
        run("seed=3")
    after = {p.name: card(project, p.name)["sha256"] for p in (project / "data/raw").iterdir() if p.is_dir()}
    assert after == before
    assert not (project / "data" / "raw.staging").exists()


def test_the_stage_command_reports_bad_input_in_one_line_and_exit_code_2(project, tmp_path):
    root = image_folder(tmp_path / "pool")
    truncated_jpeg(root / "apple" / "cut.jpg")
    use_datasets(project, {"pool": folder_dataset(root)}, "pool", "pool")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "transferlab.download",
            "experiment=t",
            ALL_USED,
            *[f"{k}={v}" for k, v in COUNTS.items() if k != "data.source_train_per_class"],
        ],
        cwd=project,
        env=project_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"error: source: 1 {BAD}") and "cut.jpg" in done.stderr


# --------------------------------------------------------------------------- archives


def zipped(folder: Path, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"photos/{path.relative_to(folder)}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return archive


def archive_dataset(archive: Path, **keys) -> dict:
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    return {"_target_": "transferlab.datasets.sources.ArchiveSource", "sha256": digest, "subdir": "photos", **keys}


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_is_checked_extracted_and_prepared(project, tmp_path, kind):
    folder = image_folder(tmp_path / "pool")
    archive = tmp_path / f"photos.{kind}"
    if kind == "zip":
        zipped(folder, archive)
    else:
        with tarfile.open(archive, "w:gz") as tf:
            tf.add(folder, arcname="photos")
    target = folder_dataset(image_folder(tmp_path / "target", size=(40, 40)))
    use_datasets(project, {"packed": archive_dataset(archive, path=str(archive)), "t": target}, "packed", "t")
    run()
    assert card(project, "source")["source"]["kind"] == "archive"
    assert card(project, "source")["counts"]["train"] == 18
    assert list((project / "data/downloads/packed").glob("extracted-*/photos/apple"))


def test_archive_with_the_wrong_checksum_is_refused(project, tmp_path):
    archive = zipped(image_folder(tmp_path / "pool"), tmp_path / "p.zip")
    spec = {**archive_dataset(archive, path=str(archive)), "sha256": "0" * 64}
    use_datasets(project, {"packed": spec}, "packed", "packed")
    with pytest.raises(ConfigError, match=r"has sha256 [0-9a-f]{64}, expected 0{64}"):
        run()


def _tar_with(archive: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(archive, "w") as tf:
        tf.addfile(member, io.BytesIO(data) if data else None)
    return archive


def _member(name: str, kind=tarfile.REGTYPE, link: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, size
    return info


@pytest.mark.parametrize(
    "case,why",
    [
        ("zip_dotdot", "path with '..'"),
        ("zip_absolute", "absolute path"),
        ("tar_dotdot", "path with '..'"),
        ("tar_absolute", "absolute path"),
        ("tar_symlink_out", "link to '../../outside.txt' outside the archive"),
        ("tar_symlink_absolute", "link to '/etc/passwd' outside the archive"),
        ("tar_hardlink_out", "outside the archive"),
    ],
)
def test_hostile_archives_are_refused_before_anything_is_written(tmp_path, case, why):
    archive = tmp_path / "evil.bin"
    if case.startswith("zip"):
        name = "../evil.txt" if case == "zip_dotdot" else "/tmp/evil.txt"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("ok/a.txt", "fine")
            zf.writestr(zipfile.ZipInfo(name), "gotcha")
    elif case in ("tar_dotdot", "tar_absolute"):
        name = "ok/../../evil.txt" if case == "tar_dotdot" else "/tmp/evil.txt"
        _tar_with(archive, _member(name, size=6), b"gotcha")
    elif case == "tar_hardlink_out":
        _tar_with(archive, _member("ok/link", tarfile.LNKTYPE, "../../outside.txt"))
    else:
        target = "../../outside.txt" if case == "tar_symlink_out" else "/etc/passwd"
        _tar_with(archive, _member("ok/link", tarfile.SYMTYPE, target))
    dest = tmp_path / "out" / "inner"
    dest.mkdir(parents=True)
    with pytest.raises(ConfigError, match=f"unsafe archive .*evil.bin.*{why}.*nothing extracted"):
        safe_extract(archive, dest)
    assert (
        list(dest.iterdir()) == [] and not (tmp_path / "evil.txt").exists() and not (tmp_path / "out/evil.txt").exists()
    )


@pytest.fixture
def http_folder(tmp_path):
    """A loopback HTTP server over a folder (the real download path, no network)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_archive_from_a_url_is_downloaded_once(project, tmp_path, http_folder):
    served, base = http_folder
    archive = zipped(image_folder(tmp_path / "pool"), served / "photos.zip")
    target = folder_dataset(image_folder(tmp_path / "target", size=(40, 40)))
    use_datasets(project, {"web": archive_dataset(archive, url=f"{base}/photos.zip"), "t": target}, "web", "t")
    run()
    cached = project / "data/downloads/web/photos.zip"
    assert cached.read_bytes() == archive.read_bytes()
    archive.unlink()  # a second run uses the cache (the server no longer has the file)
    run("seed=2")
    assert card(project, "source")["seed"] == 2


def test_unreachable_url_fails_in_one_line_naming_url_and_where_to_put_the_file(project, tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/photos.zip"
    use_datasets(
        project,
        {"web": {"_target_": "transferlab.datasets.sources.ArchiveSource", "url": url, "sha256": "a" * 64}},
        "web",
        "web",
    )
    with pytest.raises(ConfigError) as failed:
        run()
    text = str(failed.value)
    assert text.startswith(f"cannot download {url} (") and "\n" not in text
    assert str(project / "data/downloads/web/photos.zip") in text
    assert not list((project / "data/downloads/web").glob("*.part"))


# --------------------------------------------------------------------------- torchvision


def write_idx(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    magic = {1: 0x0801, 3: 0x0803}[array.ndim]
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_mnist(root: Path, folder: str = "MNIST", per_class: int = 9) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", per_class), ("t10k", 3)):
        labels = np.repeat(np.arange(10), n)
        images = rng.integers(0, 255, size=(len(labels), 28, 28))
        images[:, :6, :12] = labels[:, None, None] * 20  # the label, readable after preparation
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", images)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", labels)


def fake_cifar10(root: Path, monkeypatch) -> None:
    """CIFAR-10's python batches, with torchvision's expected md5s patched to these files."""
    import torchvision.datasets

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = list(range(10)) * 2
        data = rng.integers(0, 255, size=(len(labels), 3072), dtype=np.uint8)
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": data, "labels": labels}, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump(
            {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]},
            handle,
        )
    md5 = {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in [*names, "batches.meta"]}
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[n, md5[n]] for n in names[:5]])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5["batches.meta"]})


def test_torchvision_loaders_read_their_own_on_disk_formats(project, monkeypatch):
    downloads = project / "data" / "downloads"
    fake_cifar10(downloads / "cifar10", monkeypatch)
    fake_mnist(downloads / "mnist")
    fake_mnist(downloads / "fashion_mnist", folder="FashionMNIST")
    experiment = {
        "source": {"dataset": "cifar10"},
        "targets": {
            "small_similar": {"dataset": "mnist", "size": "small", "classes": ["0 - zero", "1 - one"]},
            "small_different": {"dataset": "fashion_mnist", "size": "small"},
            "large_similar": {"dataset": "mnist", "size": "large"},
            "large_different": {"dataset": "fashion_mnist", "size": "large"},
        },
    }
    OmegaConf.save(OmegaConf.create(experiment), project / "conf/experiment/t.yaml")
    run(**{"data.source_train_per_class": "null", "data.test_per_class": "null"})
    source = card(project, "source")
    assert source["classes"][:3] == ["airplane", "automobile", "bird"] and source["source"]["kind"] == "torchvision"
    assert source["counts"] == {"train": 100 - 20, "val": 20, "test": 20}  # 5 batches of 20; val carved from train
    assert card(project, "small_similar")["classes"] == ["0 - zero", "1 - one"]
    assert card(project, "large_different")["classes"][0] == "T-shirt/top"
    x, y = arrays(project, "large_similar", "train")
    assert x.shape == (50, 32, 32, 3) and (x[..., 0] == x[..., 1]).all(), "grayscale -> 3 equal channels"
    # 28 -> 32 px (shorter side): the label block in the top left corner survives the resize.
    assert np.abs(x[:, 2, 4, 0].astype(int) - y * 20).max() <= 3


def test_real_experiments_compose_and_fail_offline_in_one_line(project, monkeypatch):
    for name in ("cifar10_stl10_eurosat", "mnist_svhn_fashion"):
        cfg = load_config("download", [f"experiment={name}"])
        todo = download.plans(cfg)
        download.build_sources(cfg, project, list(dict.fromkeys(p.use.dataset for p in todo)))
        assert cfg.tracking.experiment_name == f"transferlab-{name}"

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(ConfigError) as failed:
        download.main(["experiment=cifar10_stl10_eurosat"])
    text = str(failed.value)
    assert text.startswith(
        "cannot get torchvision dataset CIFAR10 from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    )
    assert str(project / "data" / "downloads" / "cifar10") in text and "\n" not in text
    assert not (project / "data" / "raw").exists()


def test_folder_template_without_a_root_fails_in_one_line(project):
    with pytest.raises(ConfigError) as failed:
        download.main(["experiment=my_folders"])
    assert "my_source" in str(failed.value) and "\n" not in str(failed.value)


def fake_svhn(root: Path, monkeypatch) -> None:
    """SVHN's .mat files (X: 32x32x3xN, y: 1..10 with 10 for the digit 0), md5s patched."""
    import scipy.io
    import torchvision.datasets

    rng = np.random.default_rng(2)
    split_list = {}
    for split, n in (("train", 8), ("test", 3)):
        labels = np.repeat(np.arange(1, 11), n)
        images = rng.integers(0, 255, size=(32, 32, 3, len(labels)), dtype=np.uint8)
        images[:4, :4, 0, :] = (labels % 10) * 20  # the digit, in the red channel of the top left corner
        path = root / f"{split}_32x32.mat"
        root.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(path, {"X": images, "y": labels[:, None]})
        url = torchvision.datasets.SVHN.split_list[split][0]
        split_list[split] = [url, path.name, hashlib.md5(path.read_bytes()).hexdigest()]
    monkeypatch.setattr(torchvision.datasets.SVHN, "split_list", split_list)


def fake_dtd(root: Path, classes=("banded", "dotted", "striped"), per_split: int = 6) -> None:
    data = root / "dtd" / "dtd"
    for s, split in enumerate(("train", "val", "test")):
        lines = []
        for c, name in enumerate(classes):
            for i in range(per_split):
                file = f"{name}_{s}{i:02d}.jpg"
                write_jpeg(data / "images" / name / file, (30 + 70 * c, 60 * s + 9 * i, 99), size=(60, 44))
                lines.append(f"{name}/{file}")
        (data / "labels").mkdir(parents=True, exist_ok=True)
        (data / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")


def fake_eurosat(root: Path, classes=("Forest", "River", "SeaLake"), per_class: int = 12) -> None:
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_jpeg(root / "eurosat" / "2750" / name / f"{name}_{i}.jpg", colour_of(c, i), size=(64, 64))


def test_more_torchvision_formats_arrays_channels_first_and_file_lists(project, monkeypatch):
    downloads = project / "data" / "downloads"
    fake_svhn(downloads / "svhn", monkeypatch)
    fake_dtd(downloads / "dtd")
    fake_eurosat(downloads / "eurosat")
    experiment = {
        "source": {"dataset": "svhn"},
        "targets": {
            "small_similar": {"dataset": "dtd", "size": "small"},
            "small_different": {"dataset": "eurosat", "size": "small"},
            "large_similar": {"dataset": "dtd", "size": "large"},
            "large_different": {"dataset": "eurosat", "size": "large"},
        },
    }
    OmegaConf.save(OmegaConf.create(experiment), project / "conf/experiment/t.yaml")
    run(**{"data.test_per_class": "null"})
    x, y = arrays(project, "source", "train")
    assert card(project, "source")["classes"] == [str(d) for d in range(10)]  # SVHN has no class names
    assert x.shape == (60, 32, 32, 3)
    assert np.abs(x[:, 1, 1, 0].astype(int) - y * 20).max() <= 0, "channels-first arrays turned into HWC correctly"
    dtd = card(project, "large_similar")
    assert dtd["classes"] == ["banded", "dotted", "striped"]
    assert dtd["splits_drawn_from"] == {"train": "train", "val": "val", "test": "test"}
    assert dtd["counts"] == {"train": 15, "val": 6, "test": 18}
    euro = card(project, "small_different")
    assert euro["classes"] == ["Forest", "River", "SeaLake"] and euro["counts"] == {"train": 9, "val": 6, "test": 21}
    assert euro["splits_drawn_from"] == {"train": "train", "val": "train", "test": "train"}
