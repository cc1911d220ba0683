"""Near-copies (resized, re-encoded, mirrored, turned) that a byte hash misses: the hash comparison itself,
and the download stage refusing them across a dataset's splits, leaving them out under `skip`, and
reporting them within a split. Every image is generated here."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_datasets import card, folder_dataset, manifest, manifest_rows, run, use_datasets

from transferlab.core.errors import ConfigError
from transferlab.datasets import near_copies


def photo(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A smooth random picture (random 8x8 colours, bicubic upscaling): structure at the low frequencies a
    pHash reads, different for every seed (200 of them: 14 bits apart at least; their copies 2 at most)."""
    cells = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(cells).resize(size, Image.Resampling.BICUBIC)


def near_copy(image: Image.Image) -> Image.Image:
    """Resized to 1.5x and re-encoded at JPEG quality 80: other bytes, the same picture."""
    bigger = image.resize((image.width * 3 // 2, image.height * 3 // 2), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    bigger.save(out, "JPEG", quality=80)
    return Image.open(io.BytesIO(out.getvalue())).convert("RGB")


def decoded(image: Image.Image, size: int = 32) -> np.ndarray:
    from transferlab.datasets.prepare import standard_image

    return standard_image(image, size)


def test_copies_are_within_the_threshold_and_different_pictures_are_not():
    """Catches: a hash or threshold that misses a resized, re-encoded, mirrored or turned copy, or that
    calls different pictures copies."""
    originals = [photo(seed) for seed in range(60)]
    held = near_copies.variant_hashes([decoded(p) for p in originals])
    kinds = {
        "resized+jpeg": [near_copy(p) for p in originals],
        "mirrored": [p.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for p in originals],
        "turned": [p.transpose(Image.Transpose.ROTATE_90) for p in originals],
    }
    for kind, copies in kinds.items():
        pairs = near_copies.near_pairs(held, near_copies.hashes([decoded(c) for c in copies]))
        assert {(p.query, p.reference) for p in pairs} >= {(i, i) for i in range(60)}, kind
    others = near_copies.near_pairs(held, held[:, 0], same_set=True)
    assert others == [], f"different pictures taken for copies: {others[:3]}"


def test_a_split_against_itself_gives_each_pair_once_and_no_self_pairs():
    """Catches: an image reported as its own copy, or one pair reported twice."""
    images = [decoded(photo(0)), decoded(photo(1)), decoded(near_copy(photo(0)))]
    pairs = near_copies.near_pairs(near_copies.variant_hashes(images), near_copies.hashes(images), same_set=True)
    assert [(p.query, p.reference) for p in pairs] == [(0, 2)]


def test_different_pictures_with_little_structure_are_not_confirmed_as_copies():
    """Catches: the hash alone deciding. scikit-learn's 8x8 handwritten digits share pHashes between
    writers (40 pairs within 6 bits in 600); in pixels they differ, and confirm() must drop them."""
    from sklearn.datasets import load_digits

    digits = [decoded(Image.fromarray((x * 255 / 16).astype(np.uint8))) for x in load_digits().images[:600]]
    candidates = near_copies.near_pairs(near_copies.variant_hashes(digits), near_copies.hashes(digits), same_set=True)
    assert len(candidates) >= 10, "the hash alone would call different digits copies"
    assert near_copies.confirm(candidates, digits, digits) == []
    first = Image.fromarray((load_digits().images[0] * 255 / 16).astype(np.uint8))
    copy = decoded(first.resize((24, 24), Image.Resampling.BICUBIC))  # a resized copy of one digit
    [pair] = near_copies.confirm([near_copies.Pair(0, 0, 0)], [digits[0]], [copy])
    assert pair.grey is not None and pair.grey <= near_copies.NEAR_COPY_GREY


def test_a_flat_colour_is_featureless_and_a_picture_is_not():
    """Catches: flat images (their pHashes are all alike) compared, which would call every one a copy."""
    assert near_copies.featureless(np.full((32, 32, 3), (40, 200, 90), np.uint8))
    assert not near_copies.featureless(decoded(photo(3)))


def split_folder(root: Path, per_class: int = 10, seed: int = 0, splits=("train", "test")) -> Path:
    for split in splits:
        offset = seed + 1000 * ("train", "test", "val").index(split)
        for c, name in enumerate(("a", "b")):
            for i in range(per_class):
                path = root / split / name / f"{name}_{i:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                photo(offset + 100 * c + i).save(path)
    return root


def test_near_copies_across_splits_fail_or_leave_the_training_copy_out(project, tmp_path):
    """Catches: a resized, re-encoded copy of a test image in train passing as a new image (the verdict is
    then chosen on a leaky split), `skip` dropping the test side instead of train, and the pair missing
    from the manifest."""
    root = split_folder(tmp_path / "split")
    near_copy(Image.open(root / "test" / "b" / "b_004.png")).save(root / "train" / "b" / "resized.jpg", quality=95)
    other = split_folder(tmp_path / "other", seed=5000)  # the targets: other pictures (a copy would be refused)
    use_datasets(project, {"split": folder_dataset(root), "other": folder_dataset(other)}, "split", "other")
    every = {"data.source_train_per_class": "null", "data.test_per_class": "null"}  # both copies are picked
    with pytest.raises(
        ConfigError,
        match=r"near-copies .*resized\.jpg \(near copy: \d+ bits, [\d.]+ grey levels from test/b/b_004\.png",
    ):
        run(**every)
    assert not (project / "data" / "raw").exists()

    run("data.on_bad_image=skip", **every)
    rows = {r["file"]: r for r in manifest(project, "source")}
    assert rows["train/b/resized.jpg"]["split"] == ""
    assert rows["train/b/resized.jpg"]["left_out"].startswith("near copy: ")
    assert rows["test/b/b_004.png"]["split"] in ("val", "test"), "the evaluation side keeps its copy"
    assert card(project, "source")["counts"] == {"train": 21 - 4 - 1, "val": 4, "test": 20}
    assert card(project, "source")["near_copies"] == 1
    kept = [r for r in rows.values() if r["split"]]
    assert all(len(r["phash"]) == 16 for r in kept)


def test_near_copies_within_a_split_are_reported_and_kept(project, tmp_path):
    """Catches: near-copies inside one split refused (an augmented training set is made of them) or not
    reported at all."""
    root = split_folder(tmp_path / "split")
    near_copy(Image.open(root / "test" / "a" / "a_002.png")).save(root / "test" / "a" / "again.jpg", quality=95)
    other = split_folder(tmp_path / "other", seed=5000)  # the targets: other pictures (a copy would be refused)
    use_datasets(project, {"split": folder_dataset(root), "other": folder_dataset(other)}, "split", "other")
    run(**{"data.test_per_class": "null"})  # all of test/: both copies are picked
    rows = {r["file"]: r for r in manifest(project, "source")}
    pair = [rows["test/a/again.jpg"], rows["test/a/a_002.png"]]
    assert [r["split"] for r in pair] == ["test", "test"]
    assert "same split, kept" in pair[0]["near_copy"] and "a_002.png" in pair[0]["near_copy"]
    assert card(project, "source")["near_copies"] == 0


def test_near_copies_of_target_images_in_the_source_are_refused_or_left_out_and_train_ones_listed(project, tmp_path):
    """Catches: a resized copy of a target's test image in the source passing (pretraining then sees the
    target's evaluation image), `skip` keeping it, and a copy of a target's training image in the source
    going unreported in overlap.csv."""
    source_root = split_folder(tmp_path / "split", splits=("train", "val", "test"))  # all of train/ is train
    target_root = split_folder(tmp_path / "other", seed=5000)
    use_datasets(
        project, {"split": folder_dataset(source_root), "other": folder_dataset(target_root)}, "split", "other"
    )
    every = {"data.source_train_per_class": "null", "data.large_train_per_class": 8}
    run(**every)  # no copies yet: which target files land where
    rows = manifest(project, "large_similar")
    evaluated = next(r["file"] for r in rows if r["split"] == "test")
    trained = next(r["file"] for r in rows if r["split"] == "train")
    near_copy(Image.open(target_root / evaluated)).save(source_root / "train" / "a" / "evaluated.jpg", quality=95)
    near_copy(Image.open(target_root / trained)).save(source_root / "train" / "b" / "trained.jpg", quality=95)

    with pytest.raises(
        ConfigError,
        match=r"source: 1 source images that are also in a target's val or test split .*evaluated\.jpg "
        r"\(overlap: a near copy \(\d+ bits, [\d.]+ grey levels\) of (small|large)_(similar|different) test image ",
    ):
        run(**every)
    run("data.on_bad_image=skip", **every)
    source = {r["file"]: r for r in manifest(project, "source")}
    assert source["train/a/evaluated.jpg"]["split"] == ""
    assert source["train/a/evaluated.jpg"]["left_out"].startswith("overlap: a near copy")
    assert source["train/b/trained.jpg"]["split"] == "train", "a copy of a training image is reported, not refused"
    listed = manifest_rows(project / "data" / "raw" / "overlap.csv")
    assert ("large_similar", trained, "train/b/trained.jpg") in {
        (r["target"], r["target_file"], r["source_file"]) for r in listed
    }
    assert all(int(r["bits"]) <= near_copies.NEAR_COPY_BITS for r in listed)
