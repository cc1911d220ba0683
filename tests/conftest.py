"""Fixtures. Expensive setup is shared through session fixtures, never through test order:

- ``prepared_project``: a tiny project with data made and the CNN pretrained (download, augment,
  pretrain), built once per session; a template no test writes to.
- ``pipeline_project``: the same after the whole comparison pipeline (`dvc repro`); a template too.
- ``prepared_copy`` / ``pipeline_copy``: a test's own copy of one of them (a few MB), so any test
  passes alone and in any order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import REPO, STAGES, TINY_PARAMS, clone_project, copy_project, dvc, git_commit, ran


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def prepared_project(tmp_path_factory) -> Path:
    project = copy_project(tmp_path_factory.mktemp("prepared") / "project", TINY_PARAMS)
    output = dvc(project, "repro", "pretrain")
    assert ran(output) == {"download", "augment", "pretrain"}, output[-3000:]
    git_commit(project, "prepared")
    return project


@pytest.fixture(scope="session")
def pipeline_project(tmp_path_factory, prepared_project) -> Path:
    project = clone_project(prepared_project, tmp_path_factory.mktemp("pipeline") / "project")
    output = dvc(project, "repro")
    assert ran(output) == STAGES - {"download", "augment", "pretrain"}, output[-3000:]
    git_commit(project, "pipeline")
    return project


@pytest.fixture
def prepared_copy(prepared_project, tmp_path) -> Path:
    return clone_project(prepared_project, tmp_path / "project")


@pytest.fixture
def pipeline_copy(pipeline_project, tmp_path) -> Path:
    return clone_project(pipeline_project, tmp_path / "project")
