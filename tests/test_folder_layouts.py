"""Real folders as people have them (issue 39): split folders in any case and common spellings, split
folders mixed with class folders, nested and linked sub-folders, links that loop or lead nowhere, file
names that are not UTF-8 or hold a newline, a root that is a file, the source and a target that are one
folder. Each case asserts its exact outcome: a one-line error, or which files were kept or named and why.
Every folder is generated here, under pytest's tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_datasets import card, folder_dataset, image_folder, manifest, run, use_datasets

from transferlab.core.errors import ConfigError
from transferlab.datasets.sources import shown


def split_folder(root: Path, names: dict[str, str], per_class: int = 10) -> Path:
    """root/<folder name>/<class>/* for each split (names: split -> the folder's spelling)."""
    for split, name in names.items():
        image_folder(root / "_made", per_class=per_class, split=split, classes=("a", "b"))
        (root / "_made" / split).rename(root / name)
        (root / "_made").rmdir()
    return root


def one_line_error(*args: str) -> str:
    with pytest.raises(ConfigError) as failed:
        run(*args)
    text = str(failed.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize(
    "names",
    [
        {"train": "TRAIN", "test": "TEST"},
        {"train": "training", "val": "Validation", "test": "testing"},
        {"train": "Train", "val": "valid"},
    ],
    ids=["upper", "long", "mixed"],
)
def test_split_folders_are_recognised_in_any_case_and_spelling(project, tmp_path, names):
    """Catches: TRAIN/ and TEST/ (or training/, Validation/) read as two classes named after the splits, the
    classes of every split merged (the data then no longer has the user's labels)."""
    root = split_folder(tmp_path / "split", names)
    use_datasets(project, {"split": folder_dataset(root)}, "split", "split")
    run()
    info = card(project, "source")
    assert info["classes"] == ["a", "b"]
    drawn = info["splits_drawn_from"]
    assert {s for s in ("val", "test") if drawn[s] == s} == {s for s in names if s != "train"}


def test_split_folders_mixed_with_other_folders_are_a_one_line_question(project, tmp_path):
    """Catches: train/ and test/ beside an extra folder read as 3 classes named train, test and extra."""
    root = split_folder(tmp_path / "split", {"train": "train", "test": "test"})
    image_folder(root / "extra", per_class=3, classes=("c",))
    use_datasets(project, {"split": folder_dataset(root)}, "split", "split")
    text = one_line_error()
    assert "top-level folders ['test', 'train'] are split names and ['extra'] are not: which is meant?" in text


def test_two_spellings_of_one_split_are_refused(project, tmp_path):
    """Catches: val/ and valid/ both taken, one silently winning."""
    root = split_folder(tmp_path / "split", {"train": "train", "val": "val"})
    image_folder(tmp_path / "v2", per_class=3, split="val", classes=("a", "b"))
    (tmp_path / "v2" / "val").rename(root / "valid")
    use_datasets(project, {"split": folder_dataset(root)}, "split", "split")
    assert "folders ['val', 'valid'] all name split val (keep one)" in one_line_error()


def test_nested_and_linked_folders_are_followed_and_bad_links_are_named(project, tmp_path):
    """Catches: a linked sub-folder inside a class not followed (its images silently unused), a link that
    loops followed forever or dropped without a word, a link to nothing vanishing from the manifest."""
    root = image_folder(tmp_path / "pool", per_class=12, classes=("a", "b"))
    extra = image_folder(tmp_path / "elsewhere", per_class=6, classes=("more",), size=(44, 36))
    (root / "a" / "linked").symlink_to(extra / "more", target_is_directory=True)
    nested = image_folder(tmp_path / "deep", per_class=4, classes=("x",), size=(52, 36))
    os.renames(nested / "x", root / "b" / "nested" / "deeper")
    (root / "a" / "loop").symlink_to(root / "a", target_is_directory=True)
    (root / "b" / "gone.jpg").symlink_to(tmp_path / "no_such_file.jpg")
    other = image_folder(tmp_path / "other", per_class=12, classes=("c", "d"), size=(40, 40))  # the targets
    use_datasets(project, {"pool": folder_dataset(root), "other": folder_dataset(other)}, "pool", "other")
    run()
    rows = {r["file"]: r for r in manifest(project, "source")}
    assert sum(f.startswith("a/linked/") for f in rows) == 6, "the linked folder's images are candidates"
    assert sum(f.startswith("b/nested/deeper/") for f in rows) == 4, "nested folders are read at any depth"
    assert rows["a/loop"]["left_out"].startswith("a link to a folder already read")
    assert rows["b/gone.jpg"]["left_out"].startswith("a link to nothing")
    assert card(project, "source")["ignored_files"] == 2


def test_file_names_that_are_not_utf8_or_hold_a_newline_are_written_escaped(project, tmp_path):
    """Catches: a UnicodeEncodeError traceback writing the manifest for a name with non-UTF-8 bytes, and a
    newline in a name breaking the one-line error."""
    root = image_folder(tmp_path / "pool", per_class=12, classes=("a", "b"))
    odd = os.fsencode(root / "a") + b"/caf\xe9.jpg"
    os.rename(root / "a" / "a_000.jpg", odd)
    (root / "b" / "two\nlines.jpg").write_bytes(b"not an image")
    use_datasets(project, {"pool": folder_dataset(root)}, "pool", "pool")
    text = one_line_error()
    assert "b/two\\nlines.jpg" in text
    run("data.on_bad_image=skip")
    files = {r["file"] for r in manifest(project, "source")}
    assert "a/caf\\xe9.jpg" in files and "b/two\\nlines.jpg" in files
    assert shown(os.fsdecode(b"caf\xe9")) == "caf\\xe9"


def test_a_root_that_is_a_file_and_a_source_that_is_a_target_get_their_own_line(project, tmp_path):
    """Catches: a root that is a file reported as "not found", and one folder named as both the source
    and a target under two dataset names reported only as hundreds of overlap lines."""
    listing = tmp_path / "photos.txt"
    listing.write_text("not a folder")
    use_datasets(project, {"pool": folder_dataset(listing)}, "pool", "pool")
    assert "photos.txt is a file, not a folder" in one_line_error()

    root = image_folder(tmp_path / "pool", per_class=12, classes=("a", "b"))
    use_datasets(
        project, {"pool": folder_dataset(root), "again": folder_dataset(root)}, "pool", "again", share_source=True
    )
    text = one_line_error()
    assert "the source (pool) and target small_similar (again) are the same folder" in text


def test_a_strip_is_refused_by_the_aspect_limit_and_null_takes_all_training_images(project, tmp_path):
    """Catches: a 400x20 strip centre-cropped to a sliver without a word, and data.large_train_per_class=null
    (which the experiment files promise means "all the rest") failing the schema."""
    from PIL import Image

    root = image_folder(tmp_path / "pool", per_class=14, classes=("a", "b"))
    Image.new("RGB", (400, 20), (10, 200, 30)).save(root / "a" / "strip.png")
    use_datasets(project, {"pool": folder_dataset(root)}, "pool", "pool")
    text = one_line_error()
    assert "a/strip.png (degenerate: 400x20 px, a strip (aspect ratio 20 beyond data.max_aspect_ratio 8))" in text
    run("data.on_bad_image=skip", "data.large_train_per_class=null")
    assert card(project, "large_similar")["counts"]["train"] == 2 * 14 - 4 - 4, "all but val and test"
    assert "data.max_aspect_ratio=0.5 is not allowed" in one_line_error("data.max_aspect_ratio=0.5")
