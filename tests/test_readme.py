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


def test_readme_pipeline_table_names_every_dvc_stage_and_its_module():
    """Catches: a stage added to dvc.yaml (or renamed) that the README's pipeline table does not list,
    or a table row pointing at a module that does not exist."""
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    readme = (REPO / "README.md").read_text()
    rows = {
        line.split("|")[1].strip().strip("`"): line.split("|")[2].strip().strip("`")
        for line in readme.splitlines()
        if line.startswith("| `")
    }
    for name, stage in stages.items():
        shown = f"{name}@<regime>" if "foreach" in stage else name
        assert shown in rows, f"README's pipeline table lacks stage {shown}"
        module = (stage["do"] if "foreach" in stage else stage)["cmd"].split("-m ")[1].split()[0]
        assert rows[shown] == "src/" + module.replace(".", "/") + ".py", (shown, rows[shown])
        assert (REPO / rows[shown]).is_file()


def test_advisor_doc_is_what_the_case_bank_gives():
    """Catches: docs/advisor.md's scores or case table edited by hand, or left stale after the bank
    (cases/bank.csv) or the advisor's scoring changed. Fix with `python tools/advisor_doc.py`."""
    done = subprocess.run([sys.executable, str(REPO / "tools/advisor_doc.py"), "--check"], cwd=REPO)
    assert done.returncode == 0, "docs/advisor.md differs from what cases/bank.csv gives: run tools/advisor_doc.py"
