"""Where the MLflow store is, a pre-flight check of it, and retries for a busy sqlite file.

Default store: ``sqlite:///<root>/mlflow.db`` with artifacts in ``<root>/mlartifacts/<experiment>``;
``MLFLOW_TRACKING_URI`` overrides it. ``<root>`` is ``DVC_ROOT`` when DVC runs the stage
(``dvc exp run`` works in a temporary copy that is deleted afterwards), else the project.

``check_store`` runs before a stage imports torch or MLflow (stdlib only), so a store that
cannot work costs seconds and one line, not a traceback after data loading: a server that
does not answer within a few seconds, a sqlite file that is corrupt, read-only, or locked by
another writer for more than a minute.
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from transferlab.core.config import project_root
from transferlab.core.errors import StoreError

T = TypeVar("T")
REACH_TIMEOUT_S = 3.0
LOCK_WAIT_S = 60.0


def store_root() -> Path:
    return Path(os.environ["DVC_ROOT"]).resolve() if os.environ.get("DVC_ROOT") else project_root()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_root() / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def artifact_location(experiment_name: str) -> str | None:
    """Artifacts beside a sqlite store (mlartifacts/<experiment> in the database's folder, never the
    working directory); a tracking server decides itself."""
    path = sqlite_path(tracking_uri())
    return None if path is None else (path.parent / "mlartifacts" / experiment_name).as_uri()


def check_store(lock_wait_s: float = LOCK_WAIT_S, reach_timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Raise StoreError (one line: the URI, what is wrong, what to do) unless the store can be written."""
    uri = tracking_uri()
    path = sqlite_path(uri)
    if path is not None:
        _check_sqlite(path, lock_wait_s)
    elif uri.startswith(("http://", "https://")):
        _check_server(uri, reach_timeout_s)


def _check_server(uri: str, timeout_s: float) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            if answer.status == 200:
                return
            reason = f"HTTP {answer.status}"
    except urllib.error.HTTPError as err:
        reason = f"HTTP {err.code}"
    except (OSError, ValueError) as err:  # refused, timed out, bad host
        reason = str(getattr(err, "reason", err))
    raise StoreError(
        f"MLflow tracking server {uri} does not answer {url} within {timeout_s:.0f} s ({reason}): "
        f"start it, or unset MLFLOW_TRACKING_URI to use the local sqlite store"
    )


def _check_sqlite(path: Path, lock_wait_s: float) -> None:
    folder = path.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise StoreError(
            f"MLflow store {path} is not writable (check the permissions of {folder}), or set "
            f"MLFLOW_TRACKING_URI to another store"
        )
    if not path.exists():
        return  # MLflow creates it
    deadline, delay, warned = time.monotonic() + lock_wait_s, 0.2, False
    while True:
        try:
            with sqlite3.connect(path, timeout=1.0) as db:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                db.execute("BEGIN IMMEDIATE")  # a writer's lock: fails while another process writes
                db.rollback()
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err):
                raise StoreError(f"MLflow store {path} cannot be opened ({err}): fix or move the file away") from None
            if time.monotonic() > deadline:
                raise StoreError(
                    f"MLflow store {path} stayed locked by another process for {lock_wait_s:.0f} s: "
                    f"stop that process (`fuser {path}` names it), or use an MLflow server for "
                    f"many concurrent writers"
                ) from None
            if not warned:
                print(f"MLflow store {path} is locked by another process; waiting up to {lock_wait_s:.0f} s")
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        except sqlite3.DatabaseError as err:
            raise StoreError(
                f"MLflow store {path} is corrupt ({err}): move it away (a new one is created) or "
                f"restore it from a backup"
            ) from None


def is_locked_error(err: BaseException) -> bool:
    text = str(err).lower()
    return "database is locked" in text or "database table is locked" in text


def with_retry(action: Callable[[], T], wait_s: float = LOCK_WAIT_S) -> T:
    """Run an MLflow call, retrying with back-off for up to ``wait_s`` while sqlite says "database is locked"."""
    deadline, delay = time.monotonic() + wait_s, 0.1
    while True:
        try:
            return action()
        except Exception as err:  # MLflow wraps sqlite errors in MlflowException
            if not is_locked_error(err) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


_clients: dict[str, object] = {}


def client():
    """One MlflowClient per store URI and process (creating one checks the schema: slow on sqlite)."""
    uri = tracking_uri()
    if uri not in _clients:
        from mlflow.tracking import MlflowClient

        _clients[uri] = with_retry(lambda: _checked_client(MlflowClient(tracking_uri=uri)))
    return _clients[uri]


def _checked_client(mlflow_client):
    mlflow_client.search_experiments(max_results=1)  # opens (and on first use creates) the store now, under retry
    return mlflow_client


# MLflow 3's UI asks "GenAI apps or model training?" for an experiment without this tag and, until
# answered, can open on the GenAI traces view; this value is what its "model training" choice writes.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(name: str) -> str:
    mlflow_client = client()
    existing = with_retry(lambda: mlflow_client.get_experiment_by_name(name))
    if existing is not None:
        return existing.experiment_id
    try:
        return with_retry(
            lambda: mlflow_client.create_experiment(
                name, artifact_location=artifact_location(name), tags=EXPERIMENT_KIND
            )
        )
    except Exception:  # another process created it between the two calls
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id
