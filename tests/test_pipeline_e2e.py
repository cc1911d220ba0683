"""The whole pipeline with DVC in a temporary copy of the project, on tiny data.

One module-scoped `dvc repro`, then checks of what it made and of what re-runs when a
fine-tuning value, a file under conf/ or a shared knob changes.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import TINY_PARAMS, copy_project, project_env

pytestmark = pytest.mark.e2e

QUADRANTS = ("small_similar", "small_different", "large_similar", "large_different")
ALL_STAGES = {"download", "augment", "pretrain", "report", *(f"finetune@{q}" for q in QUADRANTS),
              *(f"evaluate@{q}" for q in QUADRANTS)}


def dvc(project: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=project,
                          env={**project_env(), **(env or {})}, capture_output=True, text=True)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def set_param(project: Path, key: str, value) -> None:
    params = OmegaConf.load(project / "params.yaml")
    OmegaConf.update(params, key, value, merge=True)
    OmegaConf.save(params, project / "params.yaml")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("e2e") / "project", TINY_PARAMS)
    output = dvc(project, "repro")
    assert ran(output) == ALL_STAGES, output[-3000:]
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro"], cwd=project,
                   check=True)
    return project


def test_every_stage_ran_and_wrote_its_outputs(project):
    for dataset in ("source", *QUADRANTS):
        for split in ("train", "val", "test"):
            assert (project / "data/raw" / dataset / f"x_{split}.npy").is_file()
        assert (project / "data/augmented" / dataset / "x_train.npy").is_file()
    assert (project / "reports/augment_preview.png").stat().st_size > 1000
    assert (project / "models/pretrain/backbone.pt").is_file()
    for quadrant in QUADRANTS:
        assert (project / "models" / quadrant / "model.ckpt").is_file()
        assert (project / "reports/eval" / quadrant / "confusion.png").stat().st_size > 1000
    for stage_dir in ("data/raw", "data/augmented", "models/pretrain", "models/small_similar", "reports/eval/large_different"):
        assert (project / stage_dir / "config.yaml").is_file(), f"{stage_dir} lacks its resolved config"
    assert "| small_similar | freeze_all |" in (project / "reports/summary.md").read_text()
    assert (project / "reports/figures/comparison.png").stat().st_size > 1000


def test_metrics_json_has_every_quadrant_with_regime_and_metrics(project):
    metrics = json.loads((project / "reports/metrics.json").read_text())
    params = OmegaConf.load(project / "params.yaml")
    assert set(metrics) == set(QUADRANTS)
    for quadrant, entry in metrics.items():
        assert entry["regime"] == params.quadrants[quadrant].regime
        assert 0.0 <= entry["acc"] <= 1.0 and 0.0 <= entry["macro_f1"] <= 1.0 and entry["loss"] > 0
        assert entry["n_test"] == 5 * TINY_PARAMS["data.test_per_class"]
    shown = dvc(project, "metrics", "show", "--json")
    assert "small_similar" in shown and "macro_f1" in shown


def test_mlflow_holds_one_tagged_run_per_training_stage(project):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("transferlab-builtin")
    assert experiment.artifact_location == (project / "mlartifacts" / "transferlab-builtin").as_uri()
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.data.tags["stage"] == "pipeline"]
    runs = [r for r in runs if r is not parent]
    by_stage = {(r.data.tags["stage"], r.data.tags["quadrant"]): r for r in runs}
    assert len(runs) == 5 and ("pretrain", "source") in by_stage
    # One parent per pipeline execution, shared by the stages' separate processes; report finished it.
    assert {r.data.tags.get("mlflow.parentRunId") for r in runs} == {parent.info.run_id}
    assert parent.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {
        "report/summary.md", "report/metrics.json", "report/comparison.png", "report/augment_preview.png"}
    # The commit `dvc repro` ran on (the fixture committed the results on top of it afterwards).
    head = subprocess.run(["git", "rev-parse", "HEAD~1"], cwd=project, capture_output=True, text=True).stdout.strip()
    for run in (parent, *runs):
        tags = run.data.tags
        assert tags["mlflow.source.git.commit"] == head and tags["git_dirty"] == "false"
        assert tags["seed"] == "0" and tags["device"].startswith("cpu") and tags["version.torch"] == "2.14.1"
    # Data checksums (from the dataset cards) and the dvc.lock hashes of each run's stage inputs.
    import hashlib

    import yaml

    from transferlab.tracking import inputs_md5

    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    for (stage, dataset), run in by_stage.items():
        card = json.loads((project / "data/raw" / dataset / "card.json").read_text())
        assert run.data.tags["data.sha256"] == hashlib.sha256(json.dumps(card["sha256"], sort_keys=True).encode()).hexdigest()
        assert run.data.tags["data.name"] == dataset and run.data.tags["data.dataset"] in ("shapes", "textures")
        stages = ["pretrain"] if stage == "pretrain" else [f"finetune@{dataset}", f"evaluate@{dataset}"]
        for name in stages:
            assert run.data.tags[f"dvc.inputs_md5.{name.split('@')[0]}"] == inputs_md5(lock[name])
    assert by_stage[("finetune", "small_similar")].data.tags["data.sha256"] != \
        by_stage[("finetune", "large_similar")].data.tags["data.sha256"]
    packages = client.download_artifacts(runs[0].info.run_id, "environment/packages.txt", str(project / ".dvc/tmp"))
    assert "torch==2.14.1" in Path(packages).read_text()
    metric_names = None
    for quadrant in QUADRANTS:
        run = by_stage[("finetune", quadrant)]
        assert run.data.tags["regime"] == OmegaConf.load(project / "params.yaml").quadrants[quadrant].regime
        names = {k for k in run.data.metrics if k.startswith(("train/", "val/", "test/"))}
        assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/macro_f1",
                "test/acc", "test/macro_f1", "test/loss", "test/nll", "test/ece"} <= names
        metric_names = metric_names or names
        assert names == metric_names, "every regime must log the same metric names"
        history = client.get_metric_history(run.info.run_id, "val/acc")
        assert len(history) == TINY_PARAMS[f"quadrants.{quadrant}.epochs"], "one val/acc per epoch"
        assert run.data.params["regime.name"] == run.data.tags["regime"]
        assert {"lr/head", "phase"} <= set(run.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        artifacts |= {a.path for d in ("checkpoints", "evaluation") for a in client.list_artifacts(run.info.run_id, d)}
        assert {"config.yaml", "history.csv", "checkpoints/model.ckpt", "evaluation/confusion.png",
                "evaluation/per_class.csv", "evaluation/learning_curves.png"} <= artifacts
        history = (project / "models" / quadrant / "history.csv").read_text().splitlines()
        assert history[0] == "epoch,train_loss,train_acc,val_loss,val_acc"
        assert [int(line.split(",")[0]) for line in history[1:]] == list(
            range(1, TINY_PARAMS[f"quadrants.{quadrant}.epochs"] + 1))
        per_class = (project / "reports/eval" / quadrant / "per_class.csv").read_text().splitlines()
        assert len(per_class) == 1 + 5 and sum(int(line.split(",")[-1]) for line in per_class[1:]) == 30
        assert (project / "mlartifacts" / "transferlab-builtin" / run.info.run_id / "artifacts" / "config.yaml").is_file()


def test_dvc_plots_render_learning_curves_and_the_regime_comparison(project):
    done = subprocess.run([str(Path(sys.executable).parent / "dvc"), "plots", "show", "--json"], cwd=project,
                          env=project_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    shown = json.loads(done.stdout)["data"]
    assert {"val_acc_per_epoch", "train_loss_per_epoch", "regime_comparison"} <= set(shown), sorted(shown)
    curves = shown["val_acc_per_epoch"][0]["content"]["data"]["values"]
    assert {row["filename"] for row in curves} == {f"{q}/history.csv" for q in QUADRANTS}
    bars = shown["regime_comparison"][0]["content"]["data"]["values"]
    assert sorted(row["quadrant"] for row in bars) == sorted(QUADRANTS)


def test_every_quadrant_model_is_registered_and_predicts_on_raw_images(project):
    import mlflow.pyfunc
    import numpy as np
    from mlflow.tracking import MlflowClient

    from transferlab.data import load_split

    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(uri)
    for quadrant in QUADRANTS:
        decision = json.loads((project / "reports/eval" / quadrant / "registry.json").read_text())
        acc = json.loads((project / "reports/eval" / quadrant / "metrics.json").read_text())["acc"]
        assert decision == {"registered_model": f"transferlab-builtin-{quadrant}", "version": 1, "promoted": True,
                            "champion_version": 1, "test_acc": pytest.approx(acc), "margin": 0.0,
                            "champion_acc_same_test_set": None}
        champion = client.get_model_version_by_alias(f"transferlab-builtin-{quadrant}", "champion")
        assert int(champion.version) == 1 and client.get_run(champion.run_id).data.tags["quadrant"] == quadrant
    model = mlflow.pyfunc.load_model("models:/transferlab-builtin-small_similar@champion")
    images, labels = load_split(project / "data/raw/small_similar", "test")
    probabilities = np.asarray(model.predict(np.ascontiguousarray(images[:8])))
    assert probabilities.shape == (8, 5) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    accuracy = float((np.asarray(model.predict(np.ascontiguousarray(images))).argmax(1) == labels).mean())
    metrics = json.loads((project / "reports/eval/small_similar/metrics.json").read_text())
    assert accuracy == pytest.approx(metrics["acc"], abs=1e-6), "the registered model is not the tested one"


def test_same_seed_reproduces_the_same_test_metrics(project):
    """Forced re-run of a training stage (random init, shuffling, on-the-fly augmentation)."""
    before = json.loads((project / "reports/eval/large_different/metrics.json").read_text())
    dvc(project, "repro", "-f", "-s", "finetune@large_different")
    dvc(project, "repro", "-f", "-s", "evaluate@large_different")
    after = json.loads((project / "reports/eval/large_different/metrics.json").read_text())
    assert after == before
    # An equal challenger is registered but does not take the alias: only a better one does.
    decision = json.loads((project / "reports/eval/large_different/registry.json").read_text())
    assert (decision["version"], decision["promoted"], decision["champion_version"]) == (2, False, 1)
    assert decision["champion_acc_same_test_set"] == pytest.approx(after["acc"], abs=1e-6)
    # `report` did not run (DVC was asked for one stage), yet no pipeline run is left RUNNING.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("transferlab-builtin")
    parents = client.search_runs([experiment.experiment_id], "tags.stage = 'pipeline'")
    assert len(parents) >= 2 and {p.info.status for p in parents} == {"FINISHED"}


def test_one_finetuning_value_reruns_only_its_quadrant_downstream(project):
    current = OmegaConf.load(project / "params.yaml").quadrants.small_similar.lr
    set_param(project, "quadrants.small_similar.lr", current * 2)
    output = dvc(project, "repro")
    assert ran(output) == {"finetune@small_similar", "evaluate@small_similar", "report"}, output[-2000:]
    # `dvc metrics diff` against the committed results lists every quadrant's test metrics, old and new.
    diff = json.loads(dvc(project, "metrics", "diff", "--all", "--json").strip().splitlines()[-1])["reports/metrics.json"]
    committed = json.loads(subprocess.run(["git", "show", "HEAD:reports/metrics.json"], cwd=project,
                                          capture_output=True, text=True, check=True).stdout)
    now = json.loads((project / "reports/metrics.json").read_text())
    for quadrant in QUADRANTS:
        for key in ("acc", "macro_f1"):
            entry = diff[f"{quadrant}.{key}"]
            assert (entry["old"], entry["new"]) == (committed[quadrant][key], now[quadrant][key])


def test_a_change_under_conf_is_noticed(project):
    regime_file = project / "conf/regime/freeze_all.yaml"
    regime_file.write_text(regime_file.read_text().replace("head_dropout: 0.0", "head_dropout: 0.2"))
    status = json.loads(dvc(project, "status", "--json").strip().splitlines()[-1])
    assert set(status) == {"finetune@small_similar"}, status
    output = dvc(project, "repro")
    assert ran(output) == {"finetune@small_similar", "evaluate@small_similar", "report"}, output[-2000:]


def test_a_shared_finetuning_value_reruns_all_quadrants_but_not_pretraining(project):
    set_param(project, "finetune.weight_decay", OmegaConf.load(project / "params.yaml").finetune.weight_decay * 2)
    output = dvc(project, "repro")
    assert ran(output) == {*(f"finetune@{q}" for q in QUADRANTS), *(f"evaluate@{q}" for q in QUADRANTS), "report"}


def test_experiment_in_a_temporary_copy_keeps_its_mlflow_run_in_the_real_store(project):
    from mlflow.tracking import MlflowClient

    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "changes"], cwd=project,
                   check=True)
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("transferlab-builtin")
    before = {r.info.run_id for r in client.search_runs([experiment.experiment_id])}
    new_lr = OmegaConf.load(project / "params.yaml").quadrants.large_similar.lr * 2
    dvc(project, "exp", "run", "--temp", "-S", f"quadrants.large_similar.lr={new_lr}")
    new = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_id not in before]
    [parent] = [r for r in new if r.data.tags["stage"] == "pipeline"]  # the experiment's own parent run
    new = [r for r in new if r is not parent]
    assert [(r.data.tags["stage"], r.data.tags["quadrant"]) for r in new] == [("finetune", "large_similar")]
    assert new[0].data.tags["mlflow.parentRunId"] == parent.info.run_id and parent.info.status == "FINISHED"
    assert float(new[0].data.params["train.lr"]) == new_lr
    from urllib.parse import urlparse

    run_artifacts = Path(urlparse(new[0].info.artifact_uri).path)
    assert run_artifacts.is_relative_to(project / "mlartifacts"), run_artifacts
    assert (run_artifacts / "checkpoints" / "model.ckpt").is_file(), "artifacts must survive DVC's temporary copy"
    assert "test/acc" in new[0].data.metrics
    assert not list((project / ".dvc" / "tmp" / "exps").glob("**/mlflow.db")), "no store inside the temporary copy"


def _exp_records(node) -> list[dict]:
    """Every record of `dvc exp show --json` that has params and metrics (workspace, baseline, experiments)."""
    found = []
    if isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, dict) and "params" in data and "metrics" in data:
            found.append(node)
        for value in node.values():
            found.extend(_exp_records(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_exp_records(value))
    return found


def test_queued_sweep_runs_two_pipelines_at_once_into_one_sqlite_store(project):
    """`dvc exp run --queue -S 'a=x,y'` then `dvc queue start -j 2`: two pipelines in temporary copies,
    at the same time, writing to the real repository's sqlite store; nothing lost, both in `dvc exp show`."""
    import time

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("transferlab-builtin")
    before = {r.info.run_id for r in client.search_runs([experiment.experiment_id])}
    base = OmegaConf.load(project / "params.yaml").quadrants.large_similar.lr
    lrs = [base * 3, base * 5]
    dvc(project, "exp", "run", "--queue", "-S", f"quadrants.large_similar.lr={lrs[0]},{lrs[1]}")
    # Not through dvc(): the workers it starts are detached daemons that inherit stdout/stderr, so a captured
    # pipe would stay open (and subprocess.run blocked) for as long as an idle worker lives.
    with open(project / ".dvc" / "tmp" / "queue-start.log", "w") as log:
        started = subprocess.run([str(Path(sys.executable).parent / "dvc"), "queue", "start", "-j", "2"], cwd=project,
                                 env=project_env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 timeout=120)
    assert started.returncode == 0, (project / ".dvc" / "tmp" / "queue-start.log").read_text()
    deadline = time.time() + 600
    while time.time() < deadline:
        status = dvc(project, "queue", "status")
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(5)
    assert status.count("Success") >= 2 and "Failed" not in status, status
    dvc(project, "queue", "stop")  # let the idle workers go

    new = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_id not in before]
    parents = [r for r in new if r.data.tags["stage"] == "pipeline"]
    children = [r for r in new if r.data.tags["stage"] != "pipeline"]
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
    assert max(p.info.start_time for p in parents) < min(p.info.end_time for p in parents), "ran at the same time"
    assert sorted(float(c.data.params["train.lr"]) for c in children) == sorted(lrs)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {p.info.run_id for p in parents}

    records = _exp_records(json.loads(dvc(project, "exp", "show", "--json").strip().splitlines()[-1]))
    by_lr = {}
    for record in records:
        params = record["data"]["params"]["params.yaml"]["data"]
        metrics = record["data"]["metrics"].get("reports/metrics.json", {}).get("data", {})
        by_lr[params["quadrants"]["large_similar"]["lr"]] = metrics
    for child in children:
        lr = float(child.data.params["train.lr"])
        shown = by_lr[lr]["large_similar"]  # the experiment, as `dvc exp show` lists it
        for name in ("acc", "macro_f1", "loss", "ece"):
            assert child.data.metrics[f"test/{name}"] == pytest.approx(shown[name], abs=5.1e-5), name  # report rounds to 4 places
        history = client.get_metric_history(child.info.run_id, "val/acc")
        assert len(history) == TINY_PARAMS["quadrants.large_similar.epochs"], "no metric lost"
        from urllib.parse import urlparse

        artifacts = Path(urlparse(child.info.artifact_uri).path)
        assert (artifacts / "checkpoints" / "model.ckpt").is_file(), "artifacts must survive DVC's temporary copy"
        [version] = client.search_model_versions(f"run_id = '{child.info.run_id}'")  # evaluate registered it
        assert version.name == "transferlab-builtin-large_similar"


def test_matrix_switch_runs_every_regime_on_every_quadrant_and_the_cut_sweep(project):
    """matrix.seeds is the one switch: on, DVC generates the cells and the report adds the matrix; off, it goes."""
    from mlflow.tracking import MlflowClient

    matrix = {"seeds": [0, 1], "quadrants": ["small_similar", "large_different"], "regimes": ["freeze_all", "scratch"],
              "steps": 5, "cut_sweep": {"quadrants": ["small_different"], "cut_at": ["stem", "stage2"]}}
    for key, value in matrix.items():
        set_param(project, f"matrix.{key}", value)
    cells = {f"regime_matrix@{q}-{r}-{s}" for q in matrix["quadrants"] for r in matrix["regimes"] for s in (0, 1)}
    cuts = {f"cut_sweep@small_different-{c}-{s}" for c in ("stem", "stage2") for s in (0, 1)}
    output = dvc(project, "repro")
    assert ran(output) == cells | cuts | {"report"}, output[-2000:]

    params = OmegaConf.load(project / "params.yaml")
    cell = json.loads((project / "reports/matrix/cells/small_similar-scratch-s1.json").read_text())
    n_train = 5 * TINY_PARAMS["data.small_train_per_class"]  # 30 images, batches of 16: 2 steps per epoch
    assert (cell["regime"], cell["seed"], cell["n_train"], cell["epochs"]) == ("scratch", 1, n_train, 3)
    assert cell["lr"] == params.matrix.lr.scratch and 0 <= cell["test"]["acc"] <= 1
    cut = json.loads((project / "reports/matrix/cuts/small_different-stem-s0.json").read_text())
    assert (cut["regime"], cut["cut_at"]) == ("truncate_freeze", "stem")

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    run = client.get_run(cell["run_id"])
    assert {k: run.data.tags[k] for k in ("stage", "quadrant", "regime", "seed")} == {
        "stage": "regime_matrix", "quadrant": "small_similar", "regime": "scratch", "seed": "1"}
    assert run.data.metrics["test/acc"] == pytest.approx(cell["test"]["acc"])

    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["matrix"]["large_different"]["freeze_all"]["n"] == 2
    assert set(metrics["cut_sweep"]["small_different"]) == {"stem", "stage2"}
    summary = (project / "reports/summary.md").read_text()
    assert "## Every regime on every quadrant" in summary and "**large_different**: `" in summary
    assert "figures/regime_matrix.png" in summary and "## Cut-point sweep" in summary
    for figure in ("regime_matrix.png", "cut_sweep.png"):
        assert (project / "reports/figures" / figure).stat().st_size > 1000

    set_param(project, "matrix.seeds", [])
    output = dvc(project, "repro")
    assert ran(output) == {"report"}, output[-2000:]
    assert not (project / "reports/figures/regime_matrix.png").exists(), "a stale matrix figure survived"
    assert "matrix" not in json.loads((project / "reports/metrics.json").read_text())
    assert "Every regime" not in (project / "reports/summary.md").read_text()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _serving(cmd: list[str], cwd: Path, port: int, log_path: Path):
    """Run an MLflow server command, poll /health until it answers (~20 s here), stop it afterwards."""
    import os
    import signal
    import time
    import urllib.request

    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=project_env(),
                                  start_new_session=True)
        try:
            deadline = time.time() + 180
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    pass
                assert server.poll() is None and time.time() < deadline, log_path.read_text()[-3000:]
                time.sleep(1)
            yield url
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on loopback (sqlite backend, proxied artifacts)."""
    port = _free_port()
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination",
           str(tmp_path / "server-artifacts"), "--workers", "1"]
    with _serving(cmd, tmp_path, port, tmp_path / "server.log") as url:
        yield url


def _rest(url: str, endpoint: str, payload: dict | None = None) -> dict:
    import urllib.request

    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(f"{url}{endpoint}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        body = answer.read()
    return json.loads(body) if endpoint.startswith("/api/") else {"bytes": body}


def test_a_real_mlflow_server_gets_the_whole_pipeline_over_rest(project, mlflow_server):
    """The pipeline against `mlflow server` (MLFLOW_TRACKING_URI), checked only through the server's REST API."""
    from urllib.parse import quote

    url = mlflow_server
    dvc(project, "exp", "run", "--temp", "-f", env={"MLFLOW_TRACKING_URI": url})
    experiment = _rest(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=transferlab-builtin")["experiment"]
    runs = _rest(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                                       "max_results": 1000})["runs"]

    def tags(run):
        return {t["key"]: t["value"] for t in run["data"].get("tags", [])}

    [parent] = [r for r in runs if tags(r)["stage"] == "pipeline"]
    children = [r for r in runs if r is not parent]
    parent_id = parent["info"]["run_id"]
    assert parent["info"]["status"] == "FINISHED"
    assert sorted((tags(r)["stage"], tags(r)["quadrant"]) for r in children) == sorted(
        [("pretrain", "source"), *(("finetune", q) for q in QUADRANTS)])
    report = _rest(url, f"/api/2.0/mlflow/artifacts/list?run_id={parent_id}&path=report")
    assert {"report/summary.md", "report/metrics.json", "report/comparison.png"} <= {f["path"] for f in report["files"]}
    params_yaml = OmegaConf.load(project / "params.yaml")
    for run in children:
        run_tags, run_id = tags(run), run["info"]["run_id"]
        assert run_tags["mlflow.parentRunId"] == parent_id and run["info"]["status"] == "FINISHED"
        assert run_tags["seed"] == "0" and run_tags["git_dirty"] in ("true", "false") and "data.sha256" in run_tags
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        config = _rest(url, f"/get-artifact?path=config.yaml&run_uuid={run_id}")["bytes"].decode()
        if run_tags["stage"] == "pretrain":
            assert float(params["train.lr"]) == params_yaml.pretrain.lr and "val/acc" in metrics
            continue
        quadrant = run_tags["quadrant"]
        assert run_tags["regime"] == params_yaml.quadrants[quadrant].regime == params["regime.name"]
        assert float(params["train.lr"]) == params_yaml.quadrants[quadrant].lr
        assert f"quadrant: {quadrant}" in config
        assert {"train/loss", "val/acc", "test/acc", "test/macro_f1", "test/nll", "test/ece"} <= set(metrics)
        evaluation = _rest(url, f"/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=evaluation")
        assert {"evaluation/confusion.png", "evaluation/per_class.csv"} <= {f["path"] for f in evaluation["files"]}
        name = quote(f"transferlab-builtin-{quadrant}")
        assert _rest(url, f"/api/2.0/mlflow/registered-models/get?name={name}")["registered_model"]["name"] == \
            f"transferlab-builtin-{quadrant}"
        champion = _rest(url, f"/api/2.0/mlflow/registered-models/alias?name={name}&alias=champion")["model_version"]
        assert champion["version"] == "1" and champion["run_id"] == run_id


def test_make_ui_serves_the_projects_store_on_loopback(project, tmp_path):
    """`make ui` (the install step taken as done: -o) shows the pipeline's experiment and its runs."""
    port = _free_port()
    with _serving(["make", "-o", ".venv/.installed", "ui", f"MLFLOW_PORT={port}"], project, port,
                  tmp_path / "ui.log") as url:
        assert url.startswith("http://127.0.0.1:")
        experiment = _rest(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=transferlab-builtin")
        runs = _rest(url, "/api/2.0/mlflow/runs/search",
                     {"experiment_ids": [experiment["experiment"]["experiment_id"]], "max_results": 1000})["runs"]
        stages = {t["value"] for r in runs for t in r["data"]["tags"] if t["key"] == "stage"}
        assert {"pipeline", "pretrain", "finetune"} <= stages
