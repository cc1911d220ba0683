"""The files one stage writes and another reads, as typed classes (pydantic) shared by writer and readers.

Each artefact validates on load: a missing key, an unknown key or a wrong type is one line naming
the file and what to re-run, not a ``KeyError`` one stage later. ``save`` writes atomically
(``core.files.write_json``) with the same bytes for the same content (no run ids, timestamps or
absolute paths: they are DVC outputs). Optional keys listed in ``OMITTED_WHEN_NONE`` are left out
of the file rather than written as null, as the stages always wrote them.

| file | class | writer | readers |
|---|---|---|---|
| data/raw/<d>/card.json | ``DatasetCard`` | download | augment, training, evaluate, advise, tracking |
| data/augmented/<d>/meta.json | ``AugmentMeta`` | augment | training |
| models/pretrain/meta.json | ``PretrainMeta`` | pretrain | finetune, cut_sweep, advise |
| models/finetune/<r>/results.json | ``RegimeResults`` | finetune@<r> | evaluate |
| models/cut_sweep/results.json | ``CutSweepResults`` | cut_sweep | report |
| reports/evaluate/comparison.json | ``Comparison`` | evaluate | report |
| reports/advice/<d>.json | ``Advice`` | advise | report |
| reports/metrics.json | ``MetricsFile`` | report | retrain, dvc |
| .transferlab/registry/<q>.json | ``RegistryDecision`` | evaluate | retrain |
| .transferlab/state/.../result.json | ``CellResult`` | the cell runner | the cell runner (resume) |
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

from transferlab.core.errors import ConfigError

A = TypeVar("A", bound="Artifact")


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return f"'{where}': {first['msg']}"


class Record(BaseModel):
    """A typed part of an artefact: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _leave_out_unset_optionals(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for key in self.OMITTED_WHEN_NONE:
                if data.get(key, 0) is None:
                    del data[key]
        return data


class Artifact(Record):
    """A file one stage writes and another reads."""

    PRODUCER: ClassVar[str] = "<stage>"  # the stage that writes it, named in errors
    SORT_KEYS: ClassVar[bool] = True  # False: the file keeps the fields' order

    @classmethod
    def load(cls: type[A], path: Path) -> A:
        if not path.is_file():
            raise ConfigError(f"{path} not found: run `dvc repro {cls.PRODUCER}` first")
        return cls.parse_text(path.read_text(), path)

    @classmethod
    def parse_text(cls: type[A], text: str, path: Path | str = "<text>") -> A:
        try:
            return cls.model_validate(json.loads(text))
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"{path} is not valid JSON ({err.msg} at line {err.lineno}): re-run `dvc repro -f {cls.PRODUCER}`"
            ) from None
        except ValidationError as err:
            raise ConfigError(
                f"{path} is not a {cls.__name__} ({_first_error(err)}): it was written by other code; "
                f"re-run `dvc repro -f {cls.PRODUCER}`"
            ) from None

    def as_json(self) -> Any:
        return self.model_dump(mode="json")

    def save(self, path: Path) -> None:
        from transferlab.core.files import write_text

        write_text(path, json.dumps(self.as_json(), indent=2, sort_keys=self.SORT_KEYS) + "\n")


# --------------------------------------------------------------------------- data


class DatasetCard(Artifact):
    """A prepared dataset: classes, counts per split and class, checksums of its files, where it came from."""

    PRODUCER: ClassVar[str] = "download"
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"splits_drawn_from", "test_from"})

    name: str
    classes: list[str]
    image_size: int
    counts: dict[str, int]
    counts_per_class: dict[str, dict[str, int]]
    sha256: dict[str, str]
    source: dict[str, Any]  # the dataset's own description (kind, root, url, ...)
    resize: str
    seed: int | None
    on_bad_image: str
    left_out: int
    ignored_files: int
    splits_drawn_from: dict[str, str] | None = None
    test_from: str | None = None

    @property
    def dataset(self) -> str | None:
        """The conf/dataset file it was prepared from."""
        return self.source.get("dataset")

    def data_digest(self) -> str:
        """sha256 over the per-file sha256s: the prepared data in one checksum."""
        import hashlib

        return hashlib.sha256(json.dumps(self.sha256, sort_keys=True).encode()).hexdigest()


class AugmentMeta(Artifact):
    """data/augmented/<d>/: x_train.npy holds ``originals`` images, then ``copies`` augmented blocks of them."""

    PRODUCER: ClassVar[str] = "augment"

    classes: list[str]
    copies: int
    originals: int
    pipeline: str


# --------------------------------------------------------------------------- pretraining


class PretrainMeta(Artifact):
    """models/pretrain/: which network backbone.pt holds and how it was made."""

    PRODUCER: ClassVar[str] = "pretrain"
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"classes", "val_acc", "best_epoch", "weights_url"})

    model: dict[str, Any]
    source: str  # pipeline | imagenet
    stages: list[str]
    image_size: int
    classes: list[str] | None = None
    val_acc: float | None = None
    best_epoch: int | None = None
    weights_url: str | None = None


# --------------------------------------------------------------------------- training runs


class TestMetrics(Record):
    acc: float
    macro_f1: float
    loss: float
    ece: float


class EpochRow(Record):
    """One epoch of a run's history (history.csv)."""

    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"val_loss", "val_acc"})

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float | None = None
    val_acc: float | None = None


class CellRecord(Record):
    """One trained cell's outcome as the comparison files keep it. ``steps`` and ``n_train`` are left out of
    the cut sweep's records (its cells share them with the regime's)."""

    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"steps", "n_train"})

    seed: int
    val_acc: float
    best_epoch: int
    epochs: int
    test: TestMetrics
    steps: int | None = None
    n_train: int | None = None


class CellResult(Artifact):
    """What the cell runner keeps of a finished cell (its state folder's result.json): the record and the
    per-epoch history."""

    PRODUCER: ClassVar[str] = "<the stage again>"

    record: CellRecord
    history: list[EpochRow]


class QuadrantSeeds(Record):
    chosen_seed: int  # the seed whose network is kept (best validation)
    seeds: dict[str, CellRecord]  # by str(seed)


class RegimeResults(Artifact):
    """models/finetune/<regime>/results.json: every quadrant and seed of one regime."""

    PRODUCER: ClassVar[str] = "finetune@<regime>"

    regime: str
    quadrants: dict[str, QuadrantSeeds]


class CutSeeds(Record):
    seeds: dict[str, CellRecord]


class CutSweepResults(Artifact):
    """models/cut_sweep/results.json: truncate_freeze at every cut point, per quadrant and seed."""

    PRODUCER: ClassVar[str] = "cut_sweep"

    cut_at: list[str]
    quadrants: dict[str, dict[str, CutSeeds]]  # quadrant -> cut -> seeds


# --------------------------------------------------------------------------- the verdict


class Stats(Record):
    mean: float
    std: float
    n: int


class RegimeSummary(Record):
    """One regime on one quadrant: validation accuracy and every test metric over seeds."""

    seeds: list[int]
    val_acc: list[float]
    val: Stats
    test: dict[str, Stats]
    test_acc: list[float]
    chosen_seed: int


class Verdict(Record):
    """One quadrant's winner, chosen on validation data only (``analysis.verdict``)."""

    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset(
        {"margin_val", "margin_test", "seeds_won", "seeds_compared", "within_one_std"}
    )

    winner: str
    ranking: list[str]
    chosen_seed: int
    winner_val: Stats
    winner_test: dict[str, Stats]
    course_note: str
    runner_up: str | None
    course_note_rank: int | None
    margin_val: float | None = None
    margin_test: float | None = None
    seeds_won: int | None = None
    seeds_compared: int | None = None
    within_one_std: bool | None = None


class QuadrantComparison(Record):
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"num_classes"})

    regimes: dict[str, RegimeSummary]
    verdict: Verdict
    num_classes: int | None = None


class Comparison(Artifact):
    """reports/evaluate/comparison.json: per quadrant, every regime's summary and the verdict (the file is
    the mapping of quadrants itself)."""

    PRODUCER: ClassVar[str] = "evaluate"

    quadrants: dict[str, QuadrantComparison]

    @model_validator(mode="before")
    @classmethod
    def _wrap(cls, data: Any) -> Any:
        return {"quadrants": data} if isinstance(data, dict) and "quadrants" not in data else data

    def as_json(self) -> Any:
        return self.model_dump(mode="json")["quadrants"]

    def __getitem__(self, quadrant: str) -> QuadrantComparison:
        return self.quadrants[quadrant]

    def items(self):
        return self.quadrants.items()


# --------------------------------------------------------------------------- the advisor


class StageScores(Record):
    logme: float
    logme_random: float
    pad: float


class Recommendation(Record):
    regime: str
    cut_at: str | None
    reason: str


class Advice(Artifact):
    """reports/advice/<dataset>.json: the advisor's scores per stage and its pick (stages in network order)."""

    PRODUCER: ClassVar[str] = "advise"
    SORT_KEYS: ClassVar[bool] = False

    dataset: str
    classes: int
    images_per_class: float
    images_scored: int
    stages: dict[str, StageScores]
    recommendation: Recommendation
    course_note: str | None


# --------------------------------------------------------------------------- reports and the registry


class RegimeTestMetrics(Record):
    acc: float
    acc_std: float
    macro_f1: float
    macro_f1_std: float


class MetricsFile(Artifact):
    """reports/metrics.json (DVC metrics, numbers only). The file keeps each quadrant's regimes at its top
    level, after the headline (``dvc exp show`` shows the first columns); here they are ``regimes``."""

    PRODUCER: ClassVar[str] = "report"
    SORT_KEYS: ClassVar[bool] = False
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"advisor"})

    winner_acc: dict[str, float]
    winner: dict[str, int]  # the winning regime's number in names.REGIMES, from 1
    margin_val: dict[str, float]
    regimes: dict[str, dict[str, RegimeTestMetrics]] = Field(default_factory=dict)
    advisor: dict[str, int | float] | None = None  # hits (a count), Spearman correlations

    @model_validator(mode="before")
    @classmethod
    def _gather_quadrants(cls, data: Any) -> Any:
        if isinstance(data, dict) and "regimes" not in data:
            fixed = {"winner_acc", "winner", "margin_val", "advisor"}
            data = {
                **{k: v for k, v in data.items() if k in fixed},
                "regimes": {k: v for k, v in data.items() if k not in fixed},
            }
        return data

    def as_json(self) -> Any:
        data = self.model_dump(mode="json")
        regimes, advisor = data.pop("regimes"), data.pop("advisor", None)
        return {**data, **regimes, **({"advisor": advisor} if advisor is not None else {})}


class RegistryDecision(Artifact):
    """What evaluate did in the model registry for one quadrant (read by `make retrain`)."""

    PRODUCER: ClassVar[str] = "evaluate"
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"deferred"})

    registered_model: str
    version: int
    promoted: bool
    champion_version: int | None
    test_acc: float
    margin: float
    regime: str
    champion_acc_same_test_set: float | None
    deferred: bool | None = None
