"""What a new checkpoint is compared with and gated against."""

import orjson

from pipeline.config import CorpusSpec, OnlineEvalSettings
from pipeline.evaluate.compare import gate
from pipeline.evaluate.stage import online_report_name, previous_online


def _online(path, success):
    spec = CorpusSpec(name="x", target="deeplake://l/x", online=OnlineEvalSettings(seed=7, n_tasks=4))
    (path / "eval").mkdir(parents=True)
    (path / "eval" / online_report_name(spec)).write_bytes(orjson.dumps({"success_rate": success}))


def test_first_dpo_checkpoint_is_judged_against_its_sft_start(tmp_path):
    sft, dpo1, dpo2 = tmp_path / "sft", tmp_path / "dpo1", tmp_path / "dpo2"
    _online(sft, 1.0)
    _online(dpo1, 0.5)
    online = OnlineEvalSettings(seed=7, n_tasks=4)
    spec = CorpusSpec(name="dpo", format="dpo", target="deeplake://l/d", init_from="sft", online=online)
    first = previous_online(spec, {"base_model": str(sft), "checkpoint_dir": str(dpo1)}, None)
    assert first == {"success_rate": 1.0}
    assert not gate({"success_rate": 0.5}, first, "success_rate", 0.1)[0]  # worse than SFT: not promoted
    second = previous_online(spec, {"base_model": str(sft), "checkpoint_dir": str(dpo2)}, {"checkpoint_dir": str(dpo1)})
    assert second == {"success_rate": 0.5}  # later ones: against the previous checkpoint of the same corpus
    plain = CorpusSpec(name="sft", target="deeplake://l/s", online=online)
    assert previous_online(plain, {"base_model": str(tmp_path / "tiny"), "checkpoint_dir": str(sft)}, None) is None


def test_preference_eval_scores_at_most_eval_max_examples_pairs(tiny_model_dir):
    """`eval.max_examples` bounds the pairs a dpo checkpoint's offline eval scores (it once always took 64: four
    minutes of a real model's forward passes in the real-model lane, whatever the spec said)."""
    from pipeline.evaluate.stage import OFFLINE_EVALUATIONS

    def row(i):
        prompt = [{"role": "user", "content": f"How much do {i} kg of rice cost in USD?"}]
        return {"prompt": orjson.dumps(prompt).decode(), "tools": "[]",
                "chosen": orjson.dumps([{"role": "assistant", "content": f"The answer is {i}.00 USD."}]).decode(),
                "rejected": orjson.dumps([{"role": "assistant", "content": "Sorry."}]).decode()}

    spec = CorpusSpec(name="d", format="dpo", target="deeplake://l/d", eval={"max_examples": 3})
    out = OFFLINE_EVALUATIONS["preference"](spec, str(tiny_model_dir), [row(i) for i in range(2, 9)])
    assert out["n_pairs"] == 3 and 0.0 <= out["preference_accuracy"] <= 1.0
