"""What every stage checks before it imports torch or does any work (a bad value costs a second,
not a traceback after data loading): its inputs exist, its outputs can be written, no other
process runs the same stage, and the tracking store works."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from transferlab.core.config import project_root
from transferlab.core.errors import ConfigError
from transferlab.core.files import stage_lock, writable_or_error
from transferlab.core.stage import launched_as_global_zero


def require_inputs(inputs: dict[Path, str]) -> None:
    """Each path must exist (and a .json file parse); the value names the stage that makes it."""
    import json

    for path, producer in inputs.items():
        if not path.exists():
            raise ConfigError(f"{path} not found: run `dvc repro {producer}` first")
        if path.suffix == ".json":
            try:
                json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ConfigError(f"{path} is not valid JSON ({err}): re-run `dvc repro -f {producer}`") from None


@contextlib.contextmanager
def prepared(
    stage_name: str, inputs: dict[Path, str], outputs: list[Path], check_store: Callable[[], None] | None = None
) -> Iterator[None]:
    """Check inputs and outputs, hold the stage's lock (global rank 0), check the tracking store (stages
    that track pass ``transferlab.tracking.store.check_store``); then run the block."""
    require_inputs(inputs)
    for path in outputs:
        writable_or_error(path)
    lock = stage_lock(project_root(), stage_name) if launched_as_global_zero() else contextlib.nullcontext()
    with lock:
        if check_store is not None:
            check_store()
        yield
