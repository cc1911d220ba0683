"""Every module a DVC stage imports is one of its dependencies, so no code change can leave
`dvc status` clean with stale results. Imports are read from the source (ast), including the
ones inside functions (stages import torch and friends lazily)."""

from __future__ import annotations

import ast
import re
import shutil
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


def found_file(name: str) -> Path:
    """module_file of a module known to exist."""
    path = module_file(name)
    assert path is not None, f"no file for module {name}"
    return path


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
        tree = ast.parse(found_file(current).read_text())
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
        command = re.search(r"python -m (transferlab\.\w+)", body["cmd"])
        assert command, f"{stage}: no `python -m transferlab.<module>` in {body['cmd']!r}"
        module = command.group(1)
        deps = [REPO / d for d in body["deps"]]
        missing = []
        for name in sorted(imported_modules(module)):
            path = found_file(name)
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


@pytest.mark.parametrize(
    "stage", ["download", "augment", "pretrain", "finetune", "cut_sweep", "size_curve", "evaluate", "report"]
)
def test_the_readme_pipeline_table_names_each_stage_and_its_module(stage):
    """Catches: a README that lists stages or modules the pipeline does not have."""
    readme = (REPO / "README.md").read_text()
    assert f"`src/transferlab/{stage}.py`" in readme


@pytest.mark.e2e
def test_committed_results_stay_up_to_date_with_and_without_bytecode(prepared_copy):
    """Catches: dvc.lock hashing __pycache__/ inside the code folders it depends on, so that whether a
    machine writes bytecode decides whether the committed results count as up to date (a fresh clone
    then showed every code dependency as modified)."""
    import compileall

    from helpers import dvc

    for pycache in prepared_copy.rglob("__pycache__"):
        shutil.rmtree(pycache)
    assert "Data and pipelines are up to date" in dvc(prepared_copy, "status", "pretrain")
    assert compileall.compile_dir(prepared_copy / "src", quiet=1)
    assert list((prepared_copy / "src" / "transferlab" / "core").glob("__pycache__/*.pyc"))
    assert "Data and pipelines are up to date" in dvc(prepared_copy, "status", "pretrain")


def import_graph() -> dict[str, set[str]]:
    """transferlab module -> the transferlab modules it imports anywhere (functions too; not the imports
    under ``if TYPE_CHECKING:``, which never run)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((SRC / "transferlab").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text())
        skipped = {
            id(child)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in ast.walk(node)
        }
        found = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("transferlab.")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("transferlab"):
                found |= {
                    f"{node.module}.{a.name}" if module_file(f"{node.module}.{a.name}") else node.module
                    for a in node.names
                }
        graph[name] = {m for m in found if m != name}
    return graph


def test_no_two_modules_import_each_other():
    """Catches: an import circle (training/comparison.py and training/parallel.py used to import each
    other): a module that cannot be read, or imported, without the other."""
    graph = import_graph()
    circles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            current, trail = stack.pop()
            for nxt in graph.get(current, ()):
                if nxt == start:
                    circles.append(" -> ".join([*trail, nxt]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    assert not circles, circles[:5]
