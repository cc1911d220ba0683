"""docs/size_curve.md's measured part, copied from the report of a run with `size_curve.run=true` (no
number typed by hand).

python tools/size_curve_doc.py REPORTS_FOLDER [FIGURE_NAME]   (prints markdown: the summary's size-curve
section, its figure's link pointed at docs/plots/FIGURE_NAME, default size_curve.png, which this copies there;
docs/real_data.md's scenarios use their own names, so docs/size_curve.md's figure is not overwritten)
"""

import shutil
import sys
from pathlib import Path

reports = Path(sys.argv[1])
figure = sys.argv[2] if len(sys.argv) > 2 else "size_curve.png"
summary = (reports / "summary.md").read_text().splitlines()
start = next(i for i, line in enumerate(summary) if line.startswith("## Would more labels change the answer?"))
end = next((i for i, line in enumerate(summary[start + 1 :], start + 1) if line.startswith("## ")), len(summary))
section = [line.replace("figures/size_curve.png", f"plots/{figure}") for line in summary[start + 1 : end]]
shutil.copy(reports / "figures" / "size_curve.png", Path(__file__).resolve().parents[1] / "docs/plots" / figure)
print("\n".join(section).strip())
