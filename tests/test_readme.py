"""README.md quotes the committed report, not numbers typed by hand."""

import subprocess
import sys

from helpers import REPO


def test_readme_verdict_is_the_committed_reports():
    """Catches: a README whose verdict table differs from reports/summary.md (edited by hand, or stale
    after a re-run). Fix with `make readme`."""
    done = subprocess.run([sys.executable, str(REPO / "tools/readme_verdict.py"), "--check"], cwd=REPO)
    assert done.returncode == 0, "README.md's verdict differs from reports/summary.md: run `make readme`"
    readme = (REPO / "README.md").read_text()
    assert readme.index("make repro") < readme.index("make test") < readme.index("## The answer")
