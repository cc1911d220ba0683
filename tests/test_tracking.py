from pathlib import Path

from transferlab import tracking


def test_default_store_is_sqlite_at_the_project_root(repo, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(repo / "src")  # any folder inside the project
    assert tracking.tracking_uri() == f"sqlite:///{repo / 'mlflow.db'}"
    assert tracking.artifact_location("exp") == (repo / "mlartifacts" / "exp").as_uri()


def test_environment_variable_overrides_the_store(repo, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5555")
    monkeypatch.chdir(repo)
    assert tracking.tracking_uri() == "http://127.0.0.1:5555"
    assert tracking.artifact_location("exp") is None  # the server decides


def test_dvc_root_anchors_the_store_outside_a_temporary_copy(repo, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(repo)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert Path(tracking.artifact_location("e").removeprefix("file://")) == tmp_path / "mlartifacts" / "e"


def test_retry_on_locked_database_then_gives_up_on_other_errors():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert tracking.with_retry(flaky) == "ok" and len(calls) == 3
    try:
        tracking.with_retry(lambda: (_ for _ in ()).throw(ValueError("other")))
    except ValueError as err:
        assert str(err) == "other"
    else:
        raise AssertionError("other errors must not be retried")
