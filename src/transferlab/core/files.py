"""Writing outputs so that nothing already written is lost: atomic files, staged folders, locks.

- ``write_text``/``write_json``: a temporary name beside the target, then ``os.replace`` (atomic
  on one filesystem): a reader sees the old file or the new one, never half of either.
- ``staged_dir``: a stage builds its output folder under a temporary name; only when the
  block finishes does it replace the old folder (a crash leaves the old one as it was).
- ``stage_lock``: one process per stage output at a time (``fcntl.flock``, released by the
  kernel when the holder dies, so a killed run never leaves a stale lock).
- ``scratch_dir``: ``<project>/.transferlab/``, ignored by git and DVC: resumable training
  state, locks and the link from outputs to MLflow runs, none of which belongs in a DVC output.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transferlab.core.errors import ConfigError

SCRATCH = ".transferlab"


class StageBusy(ConfigError):
    """Another process holds the stage's lock."""


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, payload: dict, sort_keys: bool = True) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=sort_keys) + "\n")


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes ``final`` (replacing any old one)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def scratch_dir(root: Path, *parts: str) -> Path:
    folder = root.joinpath(SCRATCH, *parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def stage_lock(root: Path, name: str) -> Iterator[None]:
    """Hold ``.transferlab/locks/<name>.lock`` for the block, or fail at once with one line."""
    path = scratch_dir(root, "locks") / f"{name.replace('@', '-')}.lock"
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise StageBusy(
                f"{name} is already running ({holder}); wait for it to finish or stop it, then run again"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
        handle.flush()
        yield
    finally:
        handle.close()


def writable_or_error(path: Path) -> None:
    """Fail with one line when ``path``, or the folder it is written in, is not writable: every output is
    written under a temporary name beside it and then renamed (``write_bytes``, ``staged_dir``), so the
    folder must take new entries even when ``path`` itself exists."""
    probe = path.parent
    while not probe.exists():
        probe = probe.parent
    for where in (probe, path):
        if where.exists() and not os.access(where, os.W_OK):
            raise ConfigError(f"cannot write {path}: {where} is not writable (check its permissions)")


def csv_text(columns: list[str], rows: list[list[Any]] | list[tuple[Any, ...]]) -> str:
    """CSV with a header, quoted where a value needs it (a class named ``rose, red`` stays one field),
    ``\\n`` line ends; values are written with ``str`` (format them first where that matters)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """The file's sha256, read in chunks (a large archive or weights file stays out of memory)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
