"""Where datasets come from: the Hydra group conf/dataset/, one file per dataset whose
``_target_`` is one of the classes here (built with ``hydra.utils.instantiate``).

A source first ``fetch``es its files into its own folder under data/downloads/ (a cache
outside DVC's outputs, so re-preparing never re-downloads), then ``read``s each of its
splits as a ``RawSplit``: class names, labels, and either image files (decoded in
parallel by transferlab.datasets.prepare) or images already in memory. ``GeneratedSource`` is the
exception: the built-in data is rendered to exact counts (transferlab.datasets.synthetic).

Offline, a source that must download fails in ``fetch`` with one line naming the
dataset, the URL and where to put the files by hand.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from transferlab.core.errors import ConfigError
from transferlab.core.files import sha256_of
from transferlab.core.names import SPLITS

IGNORED_BY_DEFAULT = (".*", "Thumbs.db", "desktop.ini", "__MACOSX")


class DatasetUnavailable(ConfigError):
    """A dataset's files cannot be had (offline, wrong checksum, missing folder)."""


@dataclass
class RawSplit:
    """One split of a source, before decoding: exactly one of ``files`` / ``images`` is set."""

    classes: list[str]
    labels: np.ndarray  # (N,) int64 indices into ``classes``
    files: list[Path] | None = None  # image files to decode, or
    images: Any = None  # N images in memory: (N,H,W[,C]) uint8 or a sequence of PIL images
    ignored: int = 0  # files skipped by name (``ignore`` patterns), reported in the card
    # Entries that are not images and not ignored by name, with the reason (a dangling or looping link):
    # listed in the manifest, counted in the card.
    unusable: list[tuple[str, str]] | None = None

    def __len__(self) -> int:
        return len(self.labels)


# --------------------------------------------------------------------------- generated


class GeneratedSource:
    """The built-in procedurally generated data (docs/data.md): a family of classes."""

    splits = SPLITS

    def __init__(self, family: str, render: dict):
        from transferlab.datasets.synthetic import FAMILIES

        if family not in FAMILIES:
            raise ConfigError(f"unknown family {family!r} (allowed: {', '.join(FAMILIES)})")
        self.family, self.render = family, dict(render)
        self.classes = list(FAMILIES[family])

    def fetch(self, folder: Path) -> None:
        """Nothing to download."""

    def describe(self) -> dict:
        return {"kind": "generated", "family": self.family}

    def generate(self, classes: list[str], per_class: int, seed_words: list[int], image_size: int, pool=None):
        from transferlab.datasets.synthetic import make_split, render_params

        return make_split(self.family, classes, per_class, seed_words, render_params(self.render, image_size), pool)


# --------------------------------------------------------------------------- torchvision


class TorchvisionSource:
    """A torchvision dataset, downloaded by torchvision itself (``download=True``).

    ``splits`` maps our split names (train / val / test; missing ones are carved out of
    train by the download stage) to the constructor's keyword arguments, e.g.
    ``{train: {train: true}, test: {train: false}}`` for CIFAR10.
    """

    def __init__(
        self,
        dataset: str,
        url: str,
        splits: dict[str, dict],
        kwargs: dict | None = None,
        files_attr: str | None = None,
        labels_attr: str | None = None,
    ):
        import torchvision.datasets

        if not hasattr(torchvision.datasets, dataset):
            raise ConfigError(f"unknown torchvision dataset {dataset!r}")
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown or "train" not in splits:
            raise ConfigError(
                f"{dataset}: splits {sorted(splits)} are not allowed (allowed: train, and optionally val, test)"
            )
        self.dataset, self.url = dataset, url
        self.split_kwargs = {name: dict(value or {}) for name, value in splits.items()}
        self.kwargs = dict(kwargs or {})
        self.files_attr, self.labels_attr = files_attr, labels_attr
        self.splits = tuple(s for s in SPLITS if s in splits)
        self._loaded: dict[str, Any] = {}
        self.folder: Path | None = None

    def describe(self) -> dict:  # the cache folder by name: its absolute path differs between copies of the project
        return {
            "kind": "torchvision",
            "dataset": self.dataset,
            "url": self.url,
            "cache": f"data/downloads/{self.folder.name}" if self.folder else None,
        }

    def fetch(self, folder: Path) -> None:
        import torchvision.datasets

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        cls = getattr(torchvision.datasets, self.dataset)
        for split, kwargs in self.split_kwargs.items():
            try:
                self._loaded[split] = cls(root=str(folder), download=True, **self.kwargs, **kwargs)
            except (OSError, urllib.error.URLError, RuntimeError) as err:
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise DatasetUnavailable(
                    f"cannot get torchvision dataset {self.dataset} from {self.url} ({reason}): without internet, "
                    f"download it elsewhere and put its files under {folder} in torchvision's layout, then re-run"
                ) from None

    def read(self, split: str) -> RawSplit:
        dataset = self._loaded[split]
        classes = [str(c) for c in getattr(dataset, "classes", [])]
        labels = self._labels(dataset)
        if not classes:
            classes = [str(i) for i in range(int(labels.max()) + 1)]
        if self.files_attr:
            files = [Path(f) for f in getattr(dataset, self.files_attr)]
            return RawSplit(classes, labels, files=files)
        if hasattr(dataset, "samples"):  # ImageFolder-like (EuroSAT)
            return RawSplit(classes, labels, files=[Path(p) for p, _ in dataset.samples])
        data = getattr(dataset, "data", None)
        if data is None:
            raise ConfigError(
                f"torchvision dataset {self.dataset}: no image files or array found "
                f"(set files_attr in its conf/dataset file)"
            )
        images = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
        if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
            images = images.transpose(0, 2, 3, 1)  # SVHN, STL10 store NCHW
        return RawSplit(classes, labels, images=images)

    def _labels(self, dataset) -> np.ndarray:
        for attr in filter(None, (self.labels_attr, "targets", "labels", "_labels")):
            values = getattr(dataset, attr, None)
            if values is not None:
                values = values.numpy() if hasattr(values, "numpy") else values
                return np.asarray(values, dtype=np.int64).reshape(-1)
        if hasattr(dataset, "samples"):
            return np.asarray([label for _, label in dataset.samples], dtype=np.int64)
        raise ConfigError(
            f"torchvision dataset {self.dataset}: no labels found (set labels_attr in its conf/dataset file)"
        )


# --------------------------------------------------------------------------- folders


def _ignored(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def _class_folders(folder: Path, patterns: Sequence[str]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _ignored(p.name, patterns))


# Top-level folder names read as splits, matched case-insensitively.
SPLIT_SPELLINGS = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}


def split_of(name: str) -> str | None:
    """The split a top-level folder name spells (``TRAIN``, ``Validation``, ...), or None."""
    return next((split for split, names in SPLIT_SPELLINGS.items() if name.lower() in names), None)


def shown(name: str) -> str:
    """A file name as text that survives a CSV cell and a one-line error: bytes that are not UTF-8 (a
    name Python holds with surrogate escapes) as \\xNN, control characters (a newline) as \\n, \\x1b."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def walk_images(class_dir: Path, patterns: Sequence[str]) -> tuple[list[Path], int, list[tuple[str, str]]]:
    """Every file under ``class_dir`` at any depth, linked folders followed (each real folder once, so a
    link that loops is named, not followed forever): (files, how many were ignored by name, unusable
    entries with the reason)."""
    files: list[Path] = []
    ignored = 0
    unusable: list[tuple[str, str]] = []
    seen = {os.path.realpath(class_dir)}
    for folder, dirs, names in os.walk(class_dir, followlinks=True):
        here = Path(folder)
        kept = []
        for d in sorted(dirs):
            real = os.path.realpath(here / d)
            if real in seen:
                unusable.append((str(here / d), f"a link to a folder already read ({shown(real)}): not followed"))
            else:
                seen.add(real)
                kept.append(d)
        dirs[:] = kept
        for name in sorted(names):
            path = here / name
            if any(_ignored(part, patterns) for part in path.relative_to(class_dir).parts):
                ignored += 1
            elif not path.exists():
                unusable.append((str(path), f"a link to nothing ({shown(os.readlink(path))})"))
            else:
                files.append(path)
    return sorted(files), ignored, unusable


class ImageFolderSource:
    """A user's folder: ``root/<class>/*`` (one pool, split by the download stage, seeded and
    stratified) or ``root/{train,val,test}/<class>/*`` (its own splits; val/test optional).

    Every file not matching ``ignore`` is an image candidate: a file that does not decode
    is a bad image (policy ``data.on_bad_image``), never silently dropped.
    """

    def __init__(self, root: str | None = None, ignore: Sequence[str] = IGNORED_BY_DEFAULT):
        self.root = Path(root).expanduser() if root else None
        self.ignore = tuple(ignore)
        self.splits: tuple[str, ...] = ()

    def describe(self) -> dict:
        return {"kind": "folder", "root": str(self.root)}

    def fetch(self, folder: Path) -> None:
        self._scan()

    def _scan(self) -> None:
        if self.root is not None and self.root.exists() and not self.root.is_dir():
            raise DatasetUnavailable(
                f"image folder {shown(str(self.root))} is a file, not a folder (expected root/<class>/* or "
                f"root/{{train,val,test}}/<class>/*)"
            )
        if self.root is None or not self.root.is_dir():
            raise DatasetUnavailable(
                f"image folder {self.root} not found (expected root/<class>/* or root/{{train,val,test}}/<class>/*)"
            )
        top = [p.name for p in _class_folders(self.root, self.ignore)]
        spelled = {name: split_of(name) for name in top}
        splits = [name for name in top if spelled[name]]
        others = [name for name in top if not spelled[name]]
        if splits and others:
            raise ConfigError(
                f"{self.root}: top-level folders {splits} are split names and {others} are not: which is meant? "
                f"Use root/<split>/<class>/* (move {others} into the splits or out of root) or root/<class>/* "
                f"(rename {splits})"
            )
        for split in SPLITS:
            spellings = [name for name in splits if spelled[name] == split]
            if len(spellings) > 1:
                raise ConfigError(f"{self.root}: folders {spellings} all name split {split} (keep one)")
        if splits and "train" not in spelled.values():
            raise ConfigError(
                f"{self.root}: split folders {splits} but none for train (allowed: "
                f"{', '.join(SPLIT_SPELLINGS['train'])}, any case)"
            )
        if splits:
            by_split = {spelled[name]: name for name in splits}
            self.splits = tuple(s for s in SPLITS if s in by_split)
            self._split_roots = {s: self.root / by_split[s] for s in self.splits}
        else:
            self.splits = ("train",)  # one pool: val/test are carved out of it
            self._split_roots = {"train": self.root}
        classes = {s: [p.name for p in _class_folders(r, self.ignore)] for s, r in self._split_roots.items()}
        reference = classes[self.splits[0]]
        for split, names in classes.items():
            if names != reference:
                raise ConfigError(
                    f"{self.root}: class folders of {split} {names} differ from those of "
                    f"{self.splits[0]} {reference} (every split needs the same classes)"
                )
        if len(reference) < 2:
            raise ConfigError(f"{self.root}: {len(reference)} class folder(s) {reference} (need 2 or more)")
        self.classes = reference

    def read(self, split: str) -> RawSplit:
        files: list[Path] = []
        labels: list[int] = []
        ignored = 0
        unusable: list[tuple[str, str]] = []
        for index, class_dir in enumerate(_class_folders(self._split_roots[split], self.ignore)):
            found, skipped, bad = walk_images(class_dir, self.ignore)
            ignored += skipped
            unusable += [(os.path.relpath(path, self.root), reason) for path, reason in bad]
            if not found:
                raise ConfigError(
                    f"empty class folder {shown(str(class_dir))}: no files at any depth (every class needs images: "
                    f"add some or remove the folder)"
                )
            files += found
            labels += [index] * len(found)
        return RawSplit(
            list(self.classes), np.asarray(labels, dtype=np.int64), files=files, ignored=ignored, unusable=unusable
        )


# --------------------------------------------------------------------------- archives


def download_file(url: str, target: Path, timeout: float = 60.0) -> None:
    """Download ``url`` to ``target`` (via a .part file, so a broken download leaves nothing)."""
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (OSError, urllib.error.URLError, ValueError) as err:
        part.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        raise DatasetUnavailable(
            f"cannot download {url} ({reason}): without internet, download it elsewhere "
            f"and put it at {target}, then re-run"
        ) from None
    part.replace(target)


def _unsafe_member(name: str, link_target: str | None, dest: Path) -> str | None:
    """Why an archive member would land outside ``dest`` (None if it is safe)."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in path.parts:
        return "path with '..'"
    if link_target is not None:
        resolved = os.path.normpath(os.path.join(dest, os.path.dirname(str(path)), link_target))
        if os.path.isabs(link_target) or not resolved.startswith(str(dest) + os.sep):
            return f"link to {link_target!r} outside the archive"
    return None


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a zip or tar archive into ``dest``, refusing (before writing anything) any
    member with an absolute path, a '..' component, a link escaping ``dest``, or a device."""
    dest = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                target = zf.read(info).decode("utf-8", "replace") if is_link else None
                if why := _unsafe_member(info.filename, target, dest):
                    raise ConfigError(f"unsafe archive {archive}: member {info.filename!r} ({why}); nothing extracted")
                if is_link:
                    raise ConfigError(
                        f"unsafe archive {archive}: member {info.filename!r} is a symbolic link "
                        f"(not allowed in zip archives); nothing extracted"
                    )
            zf.extractall(dest)
        return
    if not tarfile.is_tarfile(archive):
        raise ConfigError(f"{archive} is neither a zip nor a tar archive")
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            target = member.linkname if (member.issym() or member.islnk()) else None
            if member.islnk() and target is not None:
                target = os.path.relpath(os.path.join(dest, target), os.path.join(dest, os.path.dirname(member.name)))
            why = _unsafe_member(member.name, target, dest)
            if why is None and (member.isdev() or member.isfifo()):
                why = "device or fifo"
            if why:
                raise ConfigError(f"unsafe archive {archive}: member {member.name!r} ({why}); nothing extracted")
        tf.extractall(dest, filter="data")  # a second guard: the stdlib's own checks


class ArchiveSource(ImageFolderSource):
    """A zip/tar archive (local ``path`` or ``url``) holding an image folder, checked against
    ``sha256`` and extracted safely; ``subdir`` is the folder inside it that holds the classes."""

    def __init__(
        self,
        sha256: str,
        url: str | None = None,
        path: str | None = None,
        subdir: str | None = None,
        ignore: Sequence[str] = IGNORED_BY_DEFAULT,
    ):
        super().__init__(None, ignore)
        if (url is None) == (path is None):
            raise ConfigError(f"an archive dataset needs exactly one of url, path (got url={url!r}, path={path!r})")
        if not isinstance(sha256, str) or len(sha256) != 64:
            raise ConfigError(f"archive sha256={sha256!r} is not allowed (must be 64 hex digits)")
        self.url, self.path, self.sha256, self.subdir = url, path, sha256.lower(), subdir

    def describe(self) -> dict:
        return {"kind": "archive", "url": self.url, "path": self.path, "sha256": self.sha256}

    def fetch(self, folder: Path) -> None:
        if self.path is not None:
            archive = Path(self.path).expanduser()
            if not archive.is_file():
                raise DatasetUnavailable(f"archive {archive} not found")
        else:
            assert self.url is not None  # an archive has a path or a url (checked when it is made)
            archive = folder / PurePosixPath(self.url.split("?")[0]).name
            if not archive.is_file():
                download_file(self.url, archive)
        actual = sha256_of(archive)
        if actual != self.sha256:
            raise ConfigError(
                f"archive {archive} has sha256 {actual}, expected {self.sha256} "
                f"(a corrupt or different file: delete it and re-run)"
            )
        extracted = folder / f"extracted-{self.sha256[:16]}"
        if not extracted.is_dir():
            staging = folder / f".extracting-{self.sha256[:16]}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            try:
                safe_extract(archive, staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            staging.replace(extracted)
        self.root = extracted / self.subdir if self.subdir else extracted
        self._scan()


# --------------------------------------------------------------------------- scikit-learn's digits


class SklearnDigitsSource:
    """scikit-learn's bundled handwritten digits (``sklearn.datasets.load_digits``: 1,797 real 8x8
    grayscale scans, 10 classes, installed with MLflow): real images without any download. One pool:
    val and test are carved out of it by the download stage."""

    splits = ("train",)

    def __init__(self):
        self.classes = [str(d) for d in range(10)]

    def describe(self) -> dict:
        return {"kind": "sklearn", "dataset": "load_digits"}

    def fetch(self, folder: Path) -> None:
        """Bundled with scikit-learn: nothing to download."""

    def read(self, split: str) -> RawSplit:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 ink levels -> 0..255
        return RawSplit(list(self.classes), digits.target.astype(np.int64), images=images)
