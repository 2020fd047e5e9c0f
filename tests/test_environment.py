"""The environment seam: a corpus spec names a world as 'module:factory', and online evaluation and GRPO
rewards reach the demo world only through it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.config import CorpusSpec
from pipeline.demo.agents import policy_for
from pipeline.environment import DEFAULT_ENVIRONMENT, Environment, load_environment
from pipeline.evaluate.online import online_eval
from pipeline.train.grpo import reward_functions

ROOT = Path(__file__).resolve().parents[1]


def test_default_spec_environment_is_the_demo_world():
    env = load_environment(CorpusSpec(name="x", target="deeplake://local/x").environment)
    assert isinstance(env, Environment) and env.name == "demo"
    assert CorpusSpec.model_fields["environment"].default == DEFAULT_ENVIRONMENT
    assert [t["function"]["name"] for t in env.tools] == ["lookup_price", "calculator", "convert"]
    assert len(reward_functions(eos_token_id=2)) == 3


@pytest.mark.parametrize("ref", ["pipeline.demo.environment", ":make_env", "pipeline.demo.environment:"])
def test_malformed_reference_is_refused(ref):
    with pytest.raises(ValueError, match="package.module:factory"):
        load_environment(ref)


def test_factory_must_return_an_environment():
    with pytest.raises(TypeError, match="Environment protocol"):
        load_environment("pipeline.models:Path")


def test_online_eval_through_an_environment_object():
    env = load_environment()
    rep = online_eval(None, seed=3, n_tasks=4, policy_factory=lambda task: policy_for("careful", task), environment=env)
    assert rep["n_tasks"] == 4 and rep["success_rate"] == 1.0


def test_nothing_outside_demo_imports_it():
    """Only the demo package itself names `pipeline.demo` in pipeline/ (assets/demo.py is the entry point)."""
    offenders = []
    for f in (ROOT / "pipeline").rglob("*.py"):
        if "demo" in f.relative_to(ROOT / "pipeline").parts[:1]:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{f.name}: {m}" for m in mods if m.startswith("pipeline.demo")]
    assert offenders == []
