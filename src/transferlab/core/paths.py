"""Where every file the stages exchange lives: one place, so that no stage rebuilds a path by hand.

``ProjectPaths`` is built from the composed config (``paths`` in conf/config.yaml, relative to the
project root). Each stage's pre-flight inputs come from here too (``inputs_of``), so that the
file a stage checks before it starts is the file it reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferlab.core.files import SCRATCH

CARD = "card.json"
META = "meta.json"
MANIFEST = "manifest.csv"
BACKBONE = "backbone.pt"
RESULTS = "results.json"
HISTORY = "history.csv"
MODEL = "model.pt"
CONFIG = "config.yaml"
COMPARISON = "comparison.json"
METRICS = "metrics.json"
SUMMARY = "summary.md"
FIGURES = "figures"


@dataclass(frozen=True)
class ProjectPaths:
    root: Path
    downloads: Path
    raw: Path
    augmented: Path
    models: Path
    reports: Path

    @classmethod
    def of(cls, cfg: Any, root: Path | None = None) -> ProjectPaths:
        from transferlab.core.config import project_root

        root = root or project_root()
        return cls(
            root=root,
            **{name: root / str(cfg.paths[name]) for name in ("downloads", "raw", "augmented", "models", "reports")},
        )

    # data/raw/<dataset>/ (download)
    def raw_dataset(self, dataset: str) -> Path:
        return self.raw / dataset

    def card(self, dataset: str) -> Path:
        return self.raw / dataset / CARD

    # data/augmented/<dataset>/ (augment)
    def augmented_dataset(self, dataset: str) -> Path:
        return self.augmented / dataset

    def augment_meta(self, dataset: str) -> Path:
        return self.augmented / dataset / META

    def augment_previews(self) -> Path:
        return self.reports / "augment"

    # models/pretrain/ (pretrain)
    @property
    def pretrain(self) -> Path:
        return self.models / "pretrain"

    @property
    def backbone(self) -> Path:
        return self.pretrain / BACKBONE

    @property
    def pretrain_meta(self) -> Path:
        return self.pretrain / META

    # models/finetune/<regime>/ (finetune@<regime>)
    def finetune(self, regime: str) -> Path:
        return self.models / "finetune" / regime

    def regime_results(self, regime: str) -> Path:
        return self.finetune(regime) / RESULTS

    def regime_model(self, regime: str, quadrant: str) -> Path:
        return self.finetune(regime) / quadrant / MODEL

    def regime_history(self, regime: str, quadrant: str) -> Path:
        return self.finetune(regime) / quadrant / HISTORY

    # models/race/ (race)
    @property
    def race(self) -> Path:
        return self.models / "race"

    @property
    def race_results(self) -> Path:
        return self.race / RESULTS

    def race_model(self, regime: str, quadrant: str) -> Path:
        return self.race / regime / quadrant / MODEL

    # models/cut_sweep/ (cut_sweep)
    @property
    def cut_sweep(self) -> Path:
        return self.models / "cut_sweep"

    @property
    def cut_sweep_results(self) -> Path:
        return self.cut_sweep / RESULTS

    # models/size_curve/ (size_curve)
    @property
    def size_curve(self) -> Path:
        return self.models / "size_curve"

    @property
    def size_curve_results(self) -> Path:
        return self.size_curve / RESULTS

    # reports/ (evaluate, advise, report)
    @property
    def evaluation(self) -> Path:
        return self.reports / "evaluate"

    @property
    def comparison(self) -> Path:
        return self.evaluation / COMPARISON

    @property
    def advice(self) -> Path:
        return self.reports / "advice"

    def advice_file(self, dataset: str) -> Path:
        return self.advice / f"{dataset}.json"

    @property
    def advice_scores(self) -> Path:
        return self.advice / "scores.json"

    def case_bank(self, relative: str) -> Path:
        """cases/bank.csv (``advise.bank``, relative to the project root)."""
        return self.root / relative

    @property
    def metrics(self) -> Path:
        return self.reports / METRICS

    @property
    def summary(self) -> Path:
        return self.reports / SUMMARY

    @property
    def figures(self) -> Path:
        return self.reports / FIGURES

    # .transferlab/ (ignored by git and DVC)
    def scratch(self, *parts: str) -> Path:
        folder = self.root.joinpath(SCRATCH, *parts)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def state(self, stage: str) -> Path:
        """Resumable training state of a stage (``finetune@x`` -> ``finetune-x``)."""
        return self.scratch("state", stage.replace("@", "-"))

    def registry_record(self, quadrant: str) -> Path:
        return self.scratch("registry") / f"{quadrant}.json"

    # pre-flight: what a stage needs, and the stage that makes it
    def dataset_inputs(self, datasets: list[str] | tuple[str, ...], augmented: bool = True) -> dict[Path, str]:
        inputs = {self.card(d): "download" for d in datasets}
        if augmented:
            inputs.update({self.augment_meta(d): "augment" for d in datasets})
        return inputs

    def pretrain_inputs(self) -> dict[Path, str]:
        return {self.pretrain_meta: "pretrain", self.backbone: "pretrain"}
