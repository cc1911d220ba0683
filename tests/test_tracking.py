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


def test_credentials_in_the_environment_never_reach_mlflow(repo, tmp_path, monkeypatch):
    """CI passes secrets as environment variables: a run's params, tags and package list must not hold them."""
    from transferlab.config import load_config

    secrets = {"MLFLOW_TRACKING_PASSWORD": "pw-3f9a1c", "AWS_SECRET_ACCESS_KEY": "key-8d2e77",
               "DVC_REMOTE_SECRET_ACCESS_KEY": "dvc-51b0aa"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(repo)
    cfg = load_config("pretrain", [], root=repo)
    run_id = tracking.start_run(cfg, "secrets-check", {"stage": "pretrain"})
    client = tracking.client()
    run = client.get_run(run_id)
    logged = " ".join([*run.data.params.values(), *run.data.tags.values(), *run.data.params, *run.data.tags])
    packages = Path(client.download_artifacts(run_id, "environment/packages.txt", str(tmp_path))).read_text()
    assert len(run.data.params) > 50, "the resolved config is logged"
    for value in secrets.values():
        assert value not in logged and value not in packages
