// Renders every plot of `dvc plots show --json` (read from stdin) to SVG with the pinned vega and
// vega-lite, headless, and prints per plot file its SVG size, the rows it read and its data marks per type (dataMarks) as JSON.
// tests/test_plots.py uses it to check that each template compiles and draws its data.
//   dvc plots show --json | node tools/vega/render.mjs [--out DIR]
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const vega = require("vega");
const vegaLite = require("vega-lite");

const outIndex = process.argv.indexOf("--out");
const outDir = outIndex > 0 ? process.argv[outIndex + 1] : null;
if (outDir) mkdirSync(outDir, { recursive: true });

// The items drawn from the data (bars, rules, text, line points), not axes, legends or titles, per mark
// type: how many, and how many have a finite position (and, for bars, a width): a field the template
// names but the data lacks leaves its items undrawn.
function dataMarks(scene, counts = {}) {
  for (const item of scene.items || []) {
    if (scene.marktype !== "group" && scene.role === "mark") {
      const type = (counts[scene.marktype] ??= { items: 0, drawn: 0 });
      type.items += 1;
      const placed = Number.isFinite(item.x) && Number.isFinite(item.y);
      const wide = scene.marktype !== "rect" || (Number.isFinite(item.width) && item.width > 0);
      if (placed && wide) type.drawn += 1;
    }
    for (const child of item.items || []) dataMarks(child, counts);
  }
  return counts;
}

const plots = JSON.parse(readFileSync(0, "utf8")).data;
const drawn = {};
for (const [file, renders] of Object.entries(plots)) {
  for (const render of renders) {
    if (render.type !== "vega") continue;
    const compiled = vegaLite.compile(render.content).spec;
    const view = new vega.View(vega.parse(compiled), { renderer: "none" });
    const svg = await view.toSVG();
    drawn[file] = { svg_bytes: svg.length, data_marks: dataMarks(view.scenegraph().root), rows: render.content.data.values.length };
    if (outDir) writeFileSync(`${outDir}/${file.replaceAll("/", "_")}.svg`, svg);
    view.finalize();
  }
}
process.stdout.write(JSON.stringify(drawn, null, 1) + "\n");
