"""Copy the verdict table of reports/summary.md into README.md (between the verdict markers).

`make readme` runs it after `dvc repro`; tests/test_readme.py fails when the two differ, so the
README never quotes a number by hand. Usage: python tools/readme_verdict.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- verdict:start -->", "<!-- verdict:end -->"


def verdict_table(summary: str) -> str:
    """The summary's first table (the verdict per quadrant)."""
    lines = summary.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| quadrant |"))
    last = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[first:last])


def with_verdict(readme: str, table: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(check: bool) -> int:
    readme_path = REPO / "README.md"
    readme = readme_path.read_text()
    updated = with_verdict(readme, verdict_table((REPO / "reports" / "summary.md").read_text()))
    if check:
        return 0 if updated == readme else 1
    readme_path.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv[1:]))
