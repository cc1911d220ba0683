"""docs/size_curve.md's measured part, copied from the report of a run with `size_curve.run=true` (no
number typed by hand).

python tools/size_curve_doc.py REPORTS_FOLDER   (prints markdown: the summary's size-curve section, its
figure's link pointed at docs/plots/size_curve.png, which this copies there)
"""

import shutil
import sys
from pathlib import Path

reports = Path(sys.argv[1])
summary = (reports / "summary.md").read_text().splitlines()
start = next(i for i, line in enumerate(summary) if line.startswith("## Would more labels change the answer?"))
end = next((i for i, line in enumerate(summary[start + 1 :], start + 1) if line.startswith("## ")), len(summary))
section = [line.replace("figures/size_curve.png", "plots/size_curve.png") for line in summary[start + 1 : end]]
shutil.copy(reports / "figures" / "size_curve.png", Path(__file__).resolve().parents[1] / "docs/plots/size_curve.png")
print("\n".join(section).strip())
