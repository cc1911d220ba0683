"""A screenshot of what `make plots` (`dvc plots show`) shows, drawn offline, for docs/plots/ (referenced
from the README).

    python tools/plots_screenshot.py [--out docs/plots/dvc_plots.png]

Writes dvc_plots/index.html from the committed reports/ and has headless Chromium (Debian's `chromium`)
open it with every host name unresolvable, so the picture is what a machine without network shows.
Needs tools/vega/node_modules (`make install`).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "plots" / "dvc_plots.png")
    parser.add_argument("--size", default="1400,2400", help="window width,height in pixels")
    args = parser.parse_args()
    browser = next((b for b in CHROMIUM if shutil.which(b)), None)
    if browser is None:
        sys.exit(f"error: no chromium found (allowed: {', '.join(CHROMIUM)}): apt-get install chromium")
    if not (ROOT / "tools" / "vega" / "node_modules" / "vega-embed").is_dir():
        sys.exit("error: tools/vega/node_modules not found: run `make install` (npm ci in tools/vega)")
    subprocess.run(["dvc", "plots", "show"], cwd=ROOT, check=True, capture_output=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--window-size={args.size}",
            "--virtual-time-budget=15000",
            f"--screenshot={args.out.resolve()}",
            (ROOT / "dvc_plots" / "index.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    print(args.out)


if __name__ == "__main__":
    main()
