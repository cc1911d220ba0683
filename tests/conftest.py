"""Fixtures. Expensive setup is shared through session fixtures, never through test order:

- ``prepared_project``: a tiny project with data made and the CNN pretrained (download, augment,
  pretrain), built once per session; a template no test writes to.
- ``pipeline_project``: the same after the whole comparison pipeline (`dvc repro`); a template too.
  Tests only read its files; anything that runs a command in a project uses a copy.
- ``prepared_copy`` / ``pipeline_copy``: a test's own copy of one of them (a few MB), so any test
  passes alone and in any order.

Under pytest-xdist (`make test` runs two workers) the templates are built once for all workers: the
first worker that needs one builds it under a file lock, the others wait for it and reuse it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

from helpers import REPO, STAGES, TINY_PARAMS, clone_project, copy_project, dvc, git_commit, ran


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """e2e tests first, in their (possibly shuffled) order: the long chains (templates, pipelines)
    start at once and the many short tests fill the workers' gaps at the end."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)


@pytest.fixture
def repo() -> Path:
    return REPO


def shared_template(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """``<name>/project``, built by ``build`` once per session, also across xdist workers (their
    temporary folders share a parent). A build that failed is started over by the next test."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder = base / name
    with FileLock(str(base / f"{name}.lock")):
        if not (folder / "built").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder / "project")
            (folder / "built").touch()
    return folder / "project"


def build_prepared(project: Path) -> None:
    copy_project(project, TINY_PARAMS)
    output = dvc(project, "repro", "pretrain")
    assert ran(output) == {"download", "augment", "pretrain"}, output[-3000:]
    git_commit(project, "prepared")


@pytest.fixture(scope="session")
def prepared_project(tmp_path_factory) -> Path:
    return shared_template(tmp_path_factory, "prepared", build_prepared)


@pytest.fixture(scope="session")
def pipeline_project(tmp_path_factory, prepared_project) -> Path:
    def build(project: Path) -> None:
        clone_project(prepared_project, project)
        output = dvc(project, "repro")
        assert ran(output) == STAGES - {"download", "augment", "pretrain"}, output[-3000:]
        git_commit(project, "pipeline")

    return shared_template(tmp_path_factory, "pipeline", build)


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory) -> Path:
    """An MLflow sqlite store with its tables made: creating them runs MLflow's migrations, 1.2-2.2 s
    per new file here, against 0.03 s to open a copy."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_db(empty_mlflow_store, tmp_path) -> Path:
    """This test's own empty MLflow store, ``tmp_path / "mlflow.db"``."""
    shutil.copyfile(empty_mlflow_store, tmp_path / "mlflow.db")
    return tmp_path / "mlflow.db"


@pytest.fixture
def prepared_copy(prepared_project, tmp_path) -> Path:
    return clone_project(prepared_project, tmp_path / "project")


@pytest.fixture
def pipeline_copy(pipeline_project, tmp_path) -> Path:
    return clone_project(pipeline_project, tmp_path / "project")


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """params.yaml + conf/ of the repository, with the stage run in-process from there."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root)
    shutil.copytree(REPO / "conf", root / "conf")
    monkeypatch.chdir(root)
    for key in [k for k in os.environ if k.startswith(("DVC_", "MLFLOW_"))]:
        monkeypatch.delenv(key)
    return root


@pytest.fixture
def stage_project(project, tmp_path, monkeypatch) -> Path:
    """``project`` with its own MLflow store (the pretrain stage checks the store)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return project
