"""Every module a DVC stage imports is one of its dependencies, so no code change can leave
`dvc status` clean with stale results. Imports are read from the source (ast), including the
ones inside functions (stages import torch and friends lazily)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from helpers import REPO

SRC = REPO / "src"


def module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(name: str) -> set[str]:
    """``name`` and every transferlab module it imports, transitively (package __init__ files included)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen or module_file(current) is None:
            continue
        seen.add(current)
        parts = current.split(".")
        todo += [".".join(parts[:i]) for i in range(2, len(parts))]  # parent packages run their __init__
        tree = ast.parse(module_file(current).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names if alias.name.startswith("transferlab")]
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("transferlab"):
                todo.append(node.module)
                todo += [f"{node.module}.{alias.name}" for alias in node.names]  # `from pkg import module`
    return seen


def uncovered(dvc_yaml: dict) -> dict[str, list[str]]:
    """{stage: [imported module files no dependency covers]} for every stage of a parsed dvc.yaml."""
    found = {}
    for stage, spec in dvc_yaml["stages"].items():
        body = spec.get("do", spec)
        module = re.search(r"python -m (transferlab\.\w+)", body["cmd"]).group(1)
        deps = [REPO / d for d in body["deps"]]
        missing = []
        for name in sorted(imported_modules(module)):
            path = module_file(name)
            if not any(path == dep or dep in path.parents for dep in deps):
                missing.append(str(path.relative_to(REPO)))
        if missing:
            found[stage] = missing
    return found


def test_every_stage_depends_on_every_module_it_imports():
    """Catches: a stage missing a module it imports from its deps (a change there would go unnoticed)."""
    assert uncovered(yaml.safe_load((REPO / "dvc.yaml").read_text())) == {}


def test_the_check_finds_a_missing_dependency():
    """Catches: a checker that passes whatever dvc.yaml says (e.g. an import graph it never walks)."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    spec["stages"]["finetune"]["do"]["deps"].remove("src/transferlab/data")
    assert "src/transferlab/data/arrays.py" in uncovered(spec)["finetune"]
    assert "transferlab.data.training_sets" in imported_modules("transferlab.finetune")


@pytest.mark.parametrize("stage", ["download", "augment", "pretrain", "finetune", "cut_sweep", "evaluate", "report"])
def test_the_readme_pipeline_table_names_each_stage_and_its_module(stage):
    """Catches: a README that lists stages or modules the pipeline does not have."""
    readme = (REPO / "README.md").read_text()
    assert f"`src/transferlab/{stage}.py`" in readme
