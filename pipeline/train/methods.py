"""The training methods, one record each: the only place that knows which recipe, trainer, launched-rank
entry point and offline evaluation go with SFT, DPO, KTO and GRPO.

The checkpoint asset (`pipeline.train.stage`), the CLI (`tracemill train <method>`), the launched worker
(`pipeline.train.worker`) and the evaluation stage all look a method up here instead of switching on its name,
so adding a method is one record. Defaults live in the recipes (`pipeline.train.recipes`), which take them
from the corpus spec's `TrainSettings`: the asset and the CLI train with the same numbers.

A method trains on a `TrainSplit`: the train split of one pinned corpus version. SFT streams its token ids
from the version (`train_sft_corpus`); the others read its rows as text, since TRL tokenizes them itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pipeline.config import TrainSettings
from pipeline.train import grpo, preference, sft
from pipeline.train.recipes import PrefRecipe, RecipeBase, RLRecipe, SFTRecipe
from pipeline.train.result import TrainResult

if TYPE_CHECKING:
    from pipeline.corpus.store import Corpus

TRAIN_QUERY = "SELECT * WHERE \"split\" = 'train'"
EVAL_QUERY = "SELECT * WHERE \"split\" = 'eval'"  # scored during SFT for an eval_loss curve
Tags = Mapping[str, str] | None


@dataclass(frozen=True)
class TrainSplit:
    """The train split of a pinned corpus version: `corpus` is the open version, `ref` names it (`…@vN`)
    for the loader and for lineage, `root` resolves a `deeplake://org/name` ref."""

    corpus: Corpus
    ref: str
    root: str | None = None
    tools_in_prompt: bool = False
    query: str = TRAIN_QUERY

    def rows(self) -> list[dict[str, Any]]:
        """The split's rows as Python values (preference and RL rows: TRL tokenizes their text itself).
        Without `tools_in_prompt` the tool list is left out of the rendered prompts."""
        rows = self.corpus.query(self.query).rows()
        return rows if self.tools_in_prompt else [{**r, "tools": "[]"} for r in rows]

    def __len__(self) -> int:
        return len(self.corpus.query(self.query))


@dataclass(frozen=True)
class TrainingMethod:
    """One way to train. `name` is the CLI command, the launched worker's kind and the MLflow `trainer`
    tag; `corpus_format` the row shape it trains on (a corpus spec's `format`, a snapshot's lineage).
    `make_recipe(settings, base_model, output_dir)` maps a spec's `train:` block to the recipe; `train`
    runs it on a split (launching a group when the recipe asks for several devices); `fit_launched` is
    what each rank of that group runs; `offline_eval` names how the evaluation room scores a checkpoint on
    held-out rows of the same shape (`pipeline.evaluate.stage.OFFLINE_EVALUATIONS`; None: no offline
    metric, only online eval). A name, not the function: evaluation sits above training (it needs
    checkpoints), and training must not import it."""

    name: str
    corpus_format: str
    recipe: type[RecipeBase]
    make_recipe: Callable[[TrainSettings, str, str], RecipeBase]
    train: Callable[[TrainSplit, Any, Any, Tags], TrainResult]
    fit_launched: Callable[[Mapping[str, Any], Any, Any, Tags, Sequence[Any]], TrainResult]
    offline_eval: Literal["generation", "preference"] | None


def _train_sft(split: TrainSplit, recipe: SFTRecipe, tracker: Any, tags: Tags) -> TrainResult:
    return sft.train_sft_corpus(split.ref, recipe, root=split.root, query=split.query, tracker=tracker,
                                run_tags=tags, eval_query=EVAL_QUERY)


def _train_pref(split: TrainSplit, recipe: PrefRecipe, tracker: Any, tags: Tags) -> TrainResult:
    return preference.train_pref(split.rows(), recipe, tracker=tracker, run_tags=tags)


def _train_grpo(split: TrainSplit, recipe: RLRecipe, tracker: Any, tags: Tags) -> TrainResult:
    return grpo.train_grpo(split.rows(), recipe, tracker=tracker, run_tags=tags)


METHODS: tuple[TrainingMethod, ...] = (
    TrainingMethod("sft", "sft", SFTRecipe, SFTRecipe.from_settings, _train_sft, sft.fit_launched, "generation"),
    *(TrainingMethod(kind, kind, PrefRecipe, functools.partial(PrefRecipe.from_settings, trainer=kind), _train_pref,
                     preference.fit_launched, "preference") for kind in ("dpo", "kto")),
    TrainingMethod("grpo", "rl", RLRecipe, RLRecipe.from_settings, _train_grpo, grpo.fit_launched, None),
)


def method_named(name: str) -> TrainingMethod:
    """The method called `name` (a CLI command, a launched worker's kind)."""
    for method in METHODS:
        if method.name == name:
            return method
    raise ValueError(f"unknown training kind {name!r}")


def method_for(corpus_format: str) -> TrainingMethod:
    """The method that trains on corpora of this row shape (`sft`, `dpo`, `kto`, `rl`)."""
    for method in METHODS:
        if method.corpus_format == corpus_format:
            return method
    raise ValueError(f"no training method for {corpus_format!r} corpora")
