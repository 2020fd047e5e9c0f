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
from typing import TYPE_CHECKING, Any

from pipeline.config import CorpusSpec, TrainSettings
from pipeline.evaluate.offline import evaluate_checkpoint, preference_accuracy
from pipeline.train import grpo, preference, sft
from pipeline.train.recipes import PrefRecipe, RecipeBase, RLRecipe, SFTRecipe
from pipeline.train.result import TrainResult

if TYPE_CHECKING:
    from pipeline.corpus.store import Corpus

TRAIN_QUERY = "SELECT * WHERE \"split\" = 'train'"
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
    what each rank of that group runs; `offline_eval(spec, checkpoint_dir, rows)` scores a checkpoint
    on held-out rows of the same shape (None: the method has no offline metric, only online eval)."""

    name: str
    corpus_format: str
    recipe: type[RecipeBase]
    make_recipe: Callable[[TrainSettings, str, str], RecipeBase]
    train: Callable[[TrainSplit, Any, Any, Tags], TrainResult]
    fit_launched: Callable[[Mapping[str, Any], Any, Any, Tags, Sequence[Any]], TrainResult]
    offline_eval: Callable[[CorpusSpec, str, list[dict[str, Any]]], dict[str, Any]] | None


def _train_sft(split: TrainSplit, recipe: SFTRecipe, tracker: Any, tags: Tags) -> TrainResult:
    return sft.train_sft_corpus(split.ref, recipe, root=split.root, query=split.query, tracker=tracker,
                                run_tags=tags)


def _train_pref(split: TrainSplit, recipe: PrefRecipe, tracker: Any, tags: Tags) -> TrainResult:
    return preference.train_pref(split.rows(), recipe, tracker=tracker, run_tags=tags)


def _train_grpo(split: TrainSplit, recipe: RLRecipe, tracker: Any, tags: Tags) -> TrainResult:
    return grpo.train_grpo(split.rows(), recipe, tracker=tracker, run_tags=tags)


def _eval_sft(spec: CorpusSpec, checkpoint_dir: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Teacher-forced loss and generation accuracy; prompts look like the training sequences did, and the
    tool schemas still check the generated arguments."""
    return evaluate_checkpoint(checkpoint_dir, rows, max_examples=spec.eval.max_examples,
                               max_new_tokens=spec.eval.max_new_tokens, tools_in_prompt=spec.tools_in_prompt)


def _eval_pref(spec: CorpusSpec, checkpoint_dir: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How often the checkpoint prefers the chosen completion (KTO rows: the desirable one)."""
    return preference_accuracy(checkpoint_dir, rows, tools_in_prompt=spec.tools_in_prompt)


METHODS: tuple[TrainingMethod, ...] = (
    TrainingMethod("sft", "sft", SFTRecipe, SFTRecipe.from_settings, _train_sft, sft.fit_launched, _eval_sft),
    *(TrainingMethod(kind, kind, PrefRecipe, functools.partial(PrefRecipe.from_settings, trainer=kind), _train_pref,
                     preference.fit_launched, _eval_pref) for kind in ("dpo", "kto")),
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
