"""Where the MLflow store is, its pre-flight check (one line, seconds), retries, closing dead runs."""

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transferlab.core.errors import StoreError
from transferlab.tracking import store


def test_default_store_is_sqlite_at_the_project_root(repo, monkeypatch):
    """Catches: a store that moves with the working directory."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(repo / "src")  # any folder inside the project
    assert store.tracking_uri() == f"sqlite:///{repo / 'mlflow.db'}"
    assert store.artifact_location("exp") == (repo / "mlartifacts" / "exp").as_uri()


def test_environment_variable_overrides_the_store(repo, tmp_path, monkeypatch):
    """Catches: MLFLOW_TRACKING_URI ignored, or artifacts of another sqlite store written to the working
    directory (MLflow's default ./mlruns)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5555")
    monkeypatch.chdir(repo)
    assert store.tracking_uri() == "http://127.0.0.1:5555"
    assert store.artifact_location("exp") is None  # the server decides
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert store.artifact_location("exp") == (tmp_path / "mlartifacts" / "exp").as_uri()


def test_dvc_root_anchors_the_store_outside_a_temporary_copy(repo, tmp_path, monkeypatch):
    """Catches: `dvc exp run --temp/--queue` writing runs into a copy DVC deletes afterwards."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(repo)
    assert store.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    location = store.artifact_location("e")
    assert location is not None and Path(location.removeprefix("file://")) == tmp_path / "mlartifacts" / "e"


def test_retry_on_locked_database_then_gives_up_on_other_errors():
    """Catches: a busy sqlite file failing a stage at once, or other errors retried for a minute."""
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert store.with_retry(flaky) == "ok" and len(calls) == 3
    with pytest.raises(ValueError, match="other"):
        store.with_retry(lambda: (_ for _ in ()).throw(ValueError("other")))


def test_a_closed_port_fails_within_seconds_with_one_line(monkeypatch):
    """Catches: a stage that hangs (minutes) on a tracking server that does not answer."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(StoreError) as err:
        store.check_store()
    assert time.monotonic() - started < 5
    assert f"http://127.0.0.1:{port}" in str(err.value) and "unset MLFLOW_TRACKING_URI" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_corrupt_database_is_one_line_naming_the_file(tmp_path, monkeypatch):
    """Catches: a DatabaseError traceback after data loading."""
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not a database" * 100)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    with pytest.raises(StoreError, match=f"MLflow store {db} is corrupt .*move it away"):
        store.check_store()


def test_a_read_only_store_is_one_line(tmp_path):
    """Catches: a permission error deep inside MLflow. The check runs as a user the folder's permissions apply
    to (as root, without CAP_DAC_OVERRIDE: root writes anywhere)."""
    import subprocess
    import sys

    from helpers import unprivileged

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    code = (
        "from transferlab.core.errors import StoreError\nfrom transferlab.tracking import store\n"
        "try:\n    store.check_store()\nexcept StoreError as err:\n    print(err)\n    raise SystemExit(3)"
    )
    try:
        done = subprocess.run(
            unprivileged([sys.executable, "-c", code]),
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"},
        )
    finally:
        folder.chmod(0o755)
    assert done.returncode == 3 and "is not writable" in done.stdout, done.stdout + done.stderr


def test_a_locked_database_is_waited_for_then_one_line(tmp_path, monkeypatch):
    """Catches: a lock held by another process killing the stage at once (the first retry), and a wait
    without end. Another process holds a write lock; the check waits, then fails naming the file."""
    db = tmp_path / "mlflow.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.commit()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sqlite3, sys, time\n"
                f"c = sqlite3.connect({str(db)!r}, isolation_level=None); c.execute('BEGIN IMMEDIATE')\n"
                "print('locked', flush=True); time.sleep(30)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
        started = time.monotonic()
        with pytest.raises(StoreError, match=f"MLflow store {db} stayed locked by another process for 2 s"):
            store.check_store(lock_wait_s=2)
        assert 2 <= time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()
    store.check_store(lock_wait_s=2)  # free again: passes


def test_credentials_in_the_environment_never_reach_mlflow(repo, tmp_path, mlflow_db, monkeypatch):
    """CI passes secrets as environment variables: a run's params, tags and package list must not hold them."""
    from transferlab.core.config import load_config
    from transferlab.tracking import runs

    secrets = {
        "MLFLOW_TRACKING_PASSWORD": "pw-3f9a1c",
        "AWS_SECRET_ACCESS_KEY": "key-8d2e77",
        "DVC_REMOTE_SECRET_ACCESS_KEY": "dvc-51b0aa",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_db}")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(repo)
    cfg = load_config("pretrain", [], root=repo)
    from transferlab.core.config import flatten

    run_id = runs.start_run("secrets-check", "secrets-check", {"stage": "pretrain"}, flatten(cfg), None, 0)
    runs.finish_run(run_id)
    client = store.client()
    run = client.get_run(run_id)
    logged = " ".join([*run.data.params.values(), *run.data.tags.values(), *run.data.params, *run.data.tags])
    packages = Path(client.download_artifacts(run_id, "environment/packages.txt", str(tmp_path))).read_text()
    missing = set(flatten(cfg)) - set(run.data.params)
    assert not missing, f"the resolved config is logged, every key: {sorted(missing)[:5]}"
    for value in secrets.values():
        assert value not in logged and value not in packages


@pytest.mark.e2e
def test_pretraining_records_the_seed_it_drew(prepared_copy):
    """Catches: `seed: null` drawing a fresh seed for pretraining but recording another: the run tagged
    "None" and history.csv with an empty seed, so the run could not be repeated."""
    import csv

    from helpers import experiment_runs, run

    run(prepared_copy, "transferlab.pretrain", "seed=null", "pretrain.epochs=1")
    newest = max(
        (r for r in experiment_runs(prepared_copy) if r.data.tags.get("stage") == "pretrain"),
        key=lambda r: r.info.start_time,
    )
    seed = newest.data.tags["seed"]
    assert seed.isdigit(), seed
    with open(prepared_copy / "models/pretrain/history.csv", newline="") as handle:
        assert {row["seed"] for row in csv.DictReader(handle)} == {seed}
