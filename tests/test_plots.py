"""`dvc plots show` draws offline: the page loads the npm-pinned vega from tools/vega, every template
draws every row of its CSV, and headless Chromium with no network renders each plot."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import REPO, project_env

VEGA = REPO / "tools" / "vega"
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def needs_vega() -> None:
    if shutil.which("node") is None or not (VEGA / "node_modules" / "vega-embed").is_dir():
        pytest.skip("vega not installed (needs npm; `make test` installs it into tools/vega)")


def plot_files() -> list[str]:
    return [next(iter(entry)) for entry in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]]


def test_dvc_plots_use_the_offline_page_without_cdn_scripts():
    """Catches: .dvc/config not naming the offline page (dvc falls back to its CDN page, blank offline),
    a page keeping dvc's {scripts} placeholder (which adds the CDN script tags), or a script path
    that does not point at the pinned copies."""
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    page = (REPO / ".dvc" / config["plots"]["html_template"]).resolve()
    assert page == VEGA / "offline.html"
    html = page.read_text()
    assert "{plot_divs}" in html and "{scripts}" not in html
    sources = re.findall(r'<script src="([^"]+)"', html)
    assert [Path(s).parts[-1] for s in sources] == ["vega.min.js", "vega-lite.min.js", "vega-embed.min.js"]
    locked = json.loads((VEGA / "package-lock.json").read_text())["packages"]
    for name in ("vega", "vega-lite", "vega-embed"):
        assert (
            locked[f"node_modules/{name}"]["version"]
            == json.loads((VEGA / "package.json").read_text())["dependencies"][name]
        ), f"{name}: package.json and the lock file disagree"
    for source in sources:  # relative to dvc_plots/index.html in the repository root
        assert (REPO / "dvc_plots" / source).resolve().is_relative_to(VEGA / "node_modules")


def rendered(project: Path) -> dict:
    shown = subprocess.run(
        ["dvc", "plots", "show", "--json"], cwd=project, capture_output=True, text=True, env=project_env()
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    drawn = subprocess.run(
        ["node", str(VEGA / "render.mjs")], input=shown.stdout, capture_output=True, text=True, timeout=120
    )
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    return json.loads(drawn.stdout)


@pytest.mark.e2e
def test_every_plot_draws_every_row_with_the_pinned_vega(pipeline_copy):
    """Catches: a template naming a field its CSV lacks (vega-lite drops those items), a spec the pinned
    vega-lite cannot compile, and a plot in dvc.yaml that draws nothing."""
    needs_vega()
    drawn = rendered(pipeline_copy)
    assert sorted(drawn) == sorted(plot_files())
    for name, plot in drawn.items():
        assert plot["data_marks"], f"{name} draws no data"
        for mark, count in plot["data_marks"].items():
            assert count["drawn"] == count["items"], f"{name}: {mark} items without a position"
    comparison = drawn["reports/comparison.csv"]
    assert comparison["data_marks"]["rect"]["drawn"] == comparison["rows"], "one bar per regime and quadrant"
    assert comparison["data_marks"]["rule"]["drawn"] >= comparison["rows"], "an interval per bar"
    curves = drawn["reports/learning_curves.csv"]
    assert curves["data_marks"]["line"]["drawn"] == curves["rows"]


def chromium_dom(page: Path) -> str:
    """The page's DOM after its scripts ran, with every host name unresolvable (no network at all)."""
    browser = next((shutil.which(b) for b in CHROMIUM if shutil.which(b)), None)
    if browser is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--virtual-time-budget=15000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def plot_divs(dom: str) -> dict[str, str]:
    """Each plot's div (dvc names it after the file: reports/comparison.csv -> reports_comparison_csv)."""
    return {
        name: dom.split(f'id="{re.sub(r"[^A-Za-z0-9]", "_", name)}"', 1)[-1].split("</div>", 1)[0]
        for name in plot_files()
    }


@pytest.mark.e2e
def test_dvc_plots_page_renders_offline_in_chromium(pipeline_copy):
    """Catches: a plots page that needs the network (dvc's default page loads vega from a CDN and stays
    blank here). The same page without tools/vega's node_modules is blank and says how to fix it,
    so the check can tell a drawn page from an empty one."""
    needs_vega()
    modules = pipeline_copy / "tools" / "vega" / "node_modules"
    done = subprocess.run(
        ["dvc", "plots", "show"], cwd=pipeline_copy, capture_output=True, text=True, env=project_env()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    page = pipeline_copy / "dvc_plots" / "index.html"
    assert "cdn.jsdelivr" not in "".join(re.findall(r"<script src=[^>]+>", page.read_text()))

    blank = chromium_dom(page)
    assert 'id="vega-missing"' in blank
    assert not any("<canvas" in div for div in plot_divs(blank).values())

    os.symlink(VEGA / "node_modules", modules)
    drawn = chromium_dom(page)
    assert 'id="vega-missing"' not in drawn
    for name, div in plot_divs(drawn).items():
        assert "<canvas" in div or "<svg" in div, f"{name} not rendered"
