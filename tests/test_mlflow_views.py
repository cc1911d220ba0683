"""What a user sees in MLflow, checked through the REST API the UI reads: a real `mlflow server` that gets
the pipeline over HTTP, and `make ui` serving the project's own store."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from helpers import BIN, EXPERIMENT, dvc, free_port, rest, serving, set_params
from transferlab.core.names import QUADRANTS
from transferlab.report import NOTE_LIMIT

pytestmark = pytest.mark.e2e


def tags_of(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def search(url: str, experiment: str) -> list[dict]:
    found = rest(url, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}")["experiment"]
    return rest(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [found["experiment_id"]], "max_results": 1000})[
        "runs"
    ]


def test_a_real_mlflow_server_gets_the_pipeline_over_http(prepared_copy, tmp_path):
    """The comparison stages against `mlflow server` (MLFLOW_TRACKING_URI), checked only through REST.
    Catches: anything that works on the local sqlite store only (model registration needs the logged
    model's id over REST; artifacts must be proxied)."""
    set_params(prepared_copy, {"regimes": ["freeze_all"], "seeds": [0], "cut_sweep.quadrants": ["small_different"]})
    port = free_port()
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(tmp_path / "server-artifacts"),
        "--workers",
        "1",
    ]
    with serving(cmd, tmp_path, port, tmp_path / "server.log") as url:
        dvc(prepared_copy, "repro", MLFLOW_TRACKING_URI=url)
        runs = search(url, EXPERIMENT)
        [parent] = [r for r in runs if tags_of(r)["stage"] == "pipeline"]
        assert parent["info"]["status"] == "FINISHED"
        assert {m["key"] for m in parent["data"]["metrics"]} >= {f"{q}/test_acc" for q in QUADRANTS}
        cells = [r for r in runs if tags_of(r)["stage"] == "finetune"]
        assert sorted(tags_of(r)["quadrant"] for r in cells) == sorted(QUADRANTS)
        assert {tags_of(r)["regime"] for r in cells} == {"freeze_all"}
        report = rest(url, f"/api/2.0/mlflow/artifacts/list?run_id={parent['info']['run_id']}&path=report")
        assert {"report/summary.md", "report/metrics.json"} <= {f["path"] for f in report["files"]}
        for quadrant in QUADRANTS:
            name = quote(f"{EXPERIMENT}-{quadrant}")
            champion = rest(url, f"/api/2.0/mlflow/registered-models/alias?name={name}&alias=champion")
            assert champion["model_version"]["version"] == "1"
            version_tags = {t["key"]: t["value"] for t in champion["model_version"]["tags"]}
            assert set(version_tags) >= {"quadrant", "regime", "seed", "test_acc", "call", "tied"}
            assert version_tags["call"] in ("clear", "tie") and version_tags["regime"] in version_tags["tied"]


def test_make_ui_shows_the_verdict_few_params_and_linked_models(pipeline_copy, tmp_path):
    """`make ui` (the install step taken as done: -o) on the pipeline's store, read as the UI reads it.
    Catches: a parent run without the verdict (an empty row in the runs table), fine-tune runs with
    hundreds of params, unnamed logged models, registry versions without their tags, summary links
    to artifacts that do not exist, an experiment without its kind (the UI then asks GenAI or
    model training before it shows any run), a parent description cut off by MLflow's tag limit or showing
    broken image links."""
    port = free_port()
    with serving(
        ["make", "-o", ".venv/.installed", "ui", f"MLFLOW_PORT={port}"], pipeline_copy, port, tmp_path / "ui.log"
    ) as url:
        experiment = rest(url, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}")["experiment"]
        assert {t["key"]: t["value"] for t in experiment["tags"]}["mlflow.experimentKind"] == "custom_model_development"
        runs = search(url, EXPERIMENT)
        parents = [r for r in runs if tags_of(r)["stage"] == "pipeline" and r["data"].get("metrics")]
        assert len(parents) == 1
        parent = parents[0]
        note = tags_of(parent)["mlflow.note.content"]
        # Whole (MLflow cuts a tag at 8,000 characters), no image link the UI cannot resolve, no raw angle
        # bracket the UI would read as HTML, and every quadrant's call and interval in it.
        assert note.startswith("# Which transfer regime should you use?") and len(note) <= NOTE_LIMIT, len(note)
        assert "![" not in note and "<" not in note and ">" not in note
        assert note.splitlines()[-1].startswith("The pretrained network: "), "the note's last line is its own"
        assert all(f"| {q} | " in note for q in QUADRANTS) and note.count("[") >= len(QUADRANTS)
        for quadrant in QUADRANTS:
            assert tags_of(parent)[f"{quadrant}.recommended"] in (
                "freeze_all",
                "truncate_freeze",
                "finetune_all",
                "scratch",
            )
            assert tags_of(parent)[f"{quadrant}.call"] in ("clear", "tie")
        run_id = parent["info"]["run_id"]
        listed = {f["path"] for f in rest(url, f"/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=report")["files"]}
        summary = rest(url, f"/get-artifact?path=report/summary.md&run_uuid={run_id}")["bytes"].decode()
        for link in ("figures/regime_matrix.png", "figures/cut_sweep.png", "evaluate/small_similar/confusion.png"):
            assert f"]({link})" in summary
            folder = "report/" + link.rsplit("/", 1)[0]
            inside = {
                f["path"] for f in rest(url, f"/api/2.0/mlflow/artifacts/list?run_id={run_id}&path={folder}")["files"]
            }
            assert f"report/{link}" in inside, f"the summary links to {link}, which is not an artifact"
        assert "report/figures" in listed
        for run in runs:
            if tags_of(run)["stage"] == "finetune":
                assert len(run["data"].get("params", [])) <= 40
        models = rest(url, "/api/2.0/mlflow/registered-models/search?max_results=100")["registered_models"]
        assert sorted(m["name"] for m in models) == sorted(f"{EXPERIMENT}-{q}" for q in QUADRANTS)
        for model in models:
            assert model.get("description") and {t["key"] for t in model["tags"]} >= {"quadrant"}
            [latest] = model["latest_versions"]
            assert {t["key"] for t in latest["tags"]} >= {"quadrant", "regime", "seed", "test_acc"}
            assert latest["source"].startswith("models:/m-")
