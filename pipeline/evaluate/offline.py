"""Evaluate a checkpoint on corpus rows: masked assistant-token loss, next-tool-call accuracy and
final-answer accuracy.

The loss uses the rows' stored `input_ids`/`loss_mask` (the very tensors training saw), batched.
Generation metrics replay each reference conversation: for every assistant turn that calls a tool,
and for the final answer, the model greedily writes that turn from the reference prefix, and the
output is parsed in the model's own chat family, the format training data was rendered in. Tool arguments compare
as parsed JSON (so key order and spacing don't matter); final answers compare after whitespace
normalisation, or as numbers when both parse as numbers ("3.50" == "3.5").
Accuracies are NaN when no example has the turn kind they measure.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.chat import (
    canonical_arguments,
    end_markers,
    family_of,
    parse_assistant_output,
    stop_token_ids,
    tokenize_conversation,
    tokenize_prompt,
)


def _load(value: Any, default: Any) -> Any:
    """Corpus columns hold JSON strings; tests and callers may pass objects."""
    if value is None or value == "":
        return default
    return json.loads(value) if isinstance(value, str | bytes) else value


def normalize_answer(text: str | None) -> str:
    return " ".join((text or "").split())


def _as_number(text: str) -> float | None:
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def answers_match(predicted: str | None, reference: str | None) -> tuple[bool, bool]:
    """(exact after whitespace normalisation, exact or numerically equal)."""
    p, r = normalize_answer(predicted), normalize_answer(reference)
    exact = p == r
    pn, rn = _as_number(p), _as_number(r)
    numeric = pn is not None and rn is not None and math.isclose(pn, rn, rel_tol=1e-6, abs_tol=1e-9)
    return exact, exact or numeric


def _calls(message: Mapping[str, Any]) -> list[tuple[str, Any]]:
    out = []
    for call in message.get("tool_calls") or []:
        inner = call.get("function") or call
        out.append((inner.get("name"), canonical_arguments(inner.get("arguments"))))
    return out


def generation_tasks(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """(kind, index) of the assistant turns to regenerate: every tool-calling turn, and the last
    message when it is an assistant answer without tool calls."""
    tasks = [("tool_call", i) for i, m in enumerate(messages) if m.get("role") == "assistant" and m.get("tool_calls")]
    last = messages[-1] if messages else {}
    if last.get("role") == "assistant" and not last.get("tool_calls") and last.get("content"):
        tasks.append(("final", len(messages) - 1))
    return tasks


def masked_loss(model: Any, rows: Sequence[tuple[list[int], list[int]]], pad_id: int,
                batch_size: int = 8) -> tuple[float, int]:
    """Mean next-token loss over the masked (assistant) tokens, teacher-forced, in length-sorted batches."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    total, count = 0.0, 0
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    for start in range(0, len(order), batch_size):
        batch = [rows[i] for i in order[start:start + batch_size]]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        loss_mask = torch.zeros((len(batch), width), dtype=torch.float32)
        for j, (i, m) in enumerate(batch):
            ids[j, :len(i)] = torch.tensor(i)
            mask[j, :len(i)] = 1
            loss_mask[j, :len(m)] = torch.tensor(m, dtype=torch.float32)
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:].to(device), reduction="none")
        weights = loss_mask[:, 1:].to(device)
        total += float((nll * weights).sum())
        count += int(weights.sum())
    return (total / count if count else float("nan")), count


def generate_turns(model: Any, tokenizer: Any, prompts: Sequence[list[int]], max_new_tokens: int,
                   batch_size: int = 16) -> list[str]:
    """Greedy continuations of token-id prompts (left-padded batches), decoded with markup kept."""
    import torch

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop = stop_token_ids(tokenizer)
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for j, p in enumerate(batch):
            ids[j, width - len(p):] = torch.tensor(p)
            attn[j, width - len(p):] = 1
        with torch.no_grad():
            out = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), do_sample=False,
                                 max_new_tokens=max_new_tokens, eos_token_id=stop, pad_token_id=pad_id)
        for row in out[:, width:].tolist():
            texts.append(tokenizer.decode(row, skip_special_tokens=False))
    return texts


def arguments_valid(name: str, arguments: Any, tools: Sequence[Mapping[str, Any]]) -> bool:
    """Do the arguments satisfy the tool's JSON schema? The subset tool schemas use in practice: an object
    with typed properties, `required`, `enum` and `additionalProperties: false`. Unknown tool → invalid."""
    spec = next(((t.get("function") or t) for t in tools if (t.get("function") or t).get("name") == name), None)
    if spec is None or not isinstance(arguments, dict):
        return False
    schema = spec.get("parameters") or {}
    props = schema.get("properties") or {}
    if any(k not in arguments for k in schema.get("required") or []):
        return False
    if schema.get("additionalProperties") is False and any(k not in props for k in arguments):
        return False
    kinds = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict}
    for key, value in arguments.items():
        want = (props.get(key) or {}).get("type")
        if want in kinds and (not isinstance(value, kinds[want]) or (want != "boolean" and isinstance(value, bool))):
            return False
        if "enum" in (props.get(key) or {}) and value not in props[key]["enum"]:
            return False
    return True


def evaluate_checkpoint(checkpoint_dir: str, rows: Sequence[Mapping[str, Any]], *, max_examples: int = 24,
                        max_new_tokens: int = 48, max_loss_examples: int = 256, batch_size: int = 8,
                        device: str = "auto", tools_in_prompt: bool = True) -> dict[str, Any]:
    """Metrics of a saved HF checkpoint on rows with `messages`, `tools` and (optionally)
    `input_ids`/`loss_mask`. Loss uses up to `max_loss_examples` rows, generation the first `max_examples`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
    model = AutoModelForCausalLM.from_pretrained(checkpoint_dir, dtype=torch.float32).to(device).eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    max_pos = getattr(model.config, "max_position_embeddings", None) or 1 << 30

    loss_rows = []
    for row in rows[:max_loss_examples]:
        if row.get("input_ids") is not None and row.get("loss_mask") is not None:
            ids, mask = [int(t) for t in row["input_ids"]], [int(t) for t in row["loss_mask"]]
        else:
            ids, mask = tokenize_conversation(tokenizer, _load(row["messages"], []), _load(row.get("tools"), []))
        loss_rows.append((ids[:max_pos], mask[:max_pos]))
    loss, n_tokens = masked_loss(model, loss_rows, pad_id, batch_size) if loss_rows else (float("nan"), 0)

    prompts, refs, schemas = [], [], []
    truncated = 0
    for row in rows[:max_examples]:
        messages, tools = _load(row["messages"], []), _load(row.get("tools"), [])
        for kind, i in generation_tasks(messages):
            prompt = tokenize_prompt(tokenizer, messages[:i], tools if tools_in_prompt else None)
            schemas.append(tools)
            if len(prompt) + max_new_tokens > max_pos:
                truncated += 1
                prompt = prompt[-(max_pos - max_new_tokens):]
            prompts.append(prompt)
            refs.append((kind, messages[i]))
    started = time.perf_counter()
    outputs = generate_turns(model, tokenizer, prompts, max_new_tokens, batch_size * 2) if prompts else []
    gen_seconds = time.perf_counter() - started

    family, ends = family_of(tokenizer), end_markers(tokenizer)
    names_ok = calls_ok = parsed = n_calls = exact_ok = final_ok = n_final = valid_ok = n_checked = 0
    per_example: dict[str, list[float]] = {"tool_name_accuracy": [], "tool_call_accuracy": [],
                                           "final_answer_accuracy": []}
    for (kind, ref), text, tools in zip(refs, outputs, schemas, strict=True):
        pred = parse_assistant_output(text, family, ends)
        if kind == "tool_call":
            n_calls += 1
            want, got = _calls(ref), _calls(pred)
            parsed += bool(got) and not pred["invalid_tool_calls"]
            names_ok += [n for n, _ in got] == [n for n, _ in want]
            calls_ok += got == want
            per_example["tool_name_accuracy"].append(float([n for n, _ in got] == [n for n, _ in want]))
            per_example["tool_call_accuracy"].append(float(got == want))
            if tools:
                n_checked += 1
                valid_ok += bool(got) and all(arguments_valid(n, a, tools) for n, a in got)
        else:
            n_final += 1
            exact, match = answers_match(pred["content"], ref.get("content"))
            exact_ok += exact
            final_ok += match
            per_example["final_answer_accuracy"].append(float(match))

    def rate(k: int, n: int) -> float:
        return k / n if n else float("nan")

    return {
        "loss": loss, "perplexity": math.exp(loss) if math.isfinite(loss) and loss < 50 else float("inf"),
        "tool_name_accuracy": rate(names_ok, n_calls), "tool_call_accuracy": rate(calls_ok, n_calls),
        "tool_call_parse_rate": rate(parsed, n_calls), "tool_args_schema_valid_rate": rate(valid_ok, n_checked),
        "final_answer_accuracy": rate(final_ok, n_final), "final_answer_exact_accuracy": rate(exact_ok, n_final),
        "n_loss_examples": len(loss_rows), "n_loss_tokens": n_tokens, "n_generation_examples": min(len(rows), max_examples),
        "n_tool_call_turns": n_calls, "n_final_answers": n_final, "n_truncated_prompts": truncated,
        "generation_seconds": gen_seconds,
        # 0/1 per generated turn, in row order: the same rows under another model pair up one to one,
        # which is what the report's paired bootstrap intervals need
        "per_example": per_example,
    }


def completion_logprob(model: Any, tokenizer: Any, prompt: list, completion: list, tools: Any) -> float:
    """Summed log-probability of the completion's assistant tokens given the prompt (teacher-forced)."""
    import torch

    ids, mask = tokenize_conversation(tokenizer, [*prompt, *completion], tools or None)
    if sum(mask) == 0:
        return float("nan")
    t = torch.tensor([ids], device=next(model.parameters()).device)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=t).logits.float()[0, :-1], dim=-1)
    picked = logp.gather(1, t[0, 1:].unsqueeze(1)).squeeze(1)
    weights = torch.tensor(mask[1:], dtype=torch.float32, device=picked.device)
    return float((picked * weights).sum())


def preference_accuracy(checkpoint_dir: str, rows: Sequence[Mapping[str, Any]], *, tools_in_prompt: bool = True,
                        max_examples: int = 64) -> dict[str, Any]:
    """Does the model prefer what people (or rewards) preferred? DPO rows: share of pairs where the chosen
    completion has the higher log-probability. KTO rows: mean log-probability of desirable minus
    undesirable completions (positive is good)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
    model = AutoModelForCausalLM.from_pretrained(checkpoint_dir).eval()
    rows = list(rows)[:max_examples]

    def lp(row: Mapping[str, Any], key: str) -> float:
        tools = _load(row.get("tools"), []) if tools_in_prompt else None
        return completion_logprob(model, tokenizer, _load(row["prompt"], []), _load(row[key], []), tools)

    if rows and "chosen" in rows[0]:
        wins = [lp(r, "chosen") > lp(r, "rejected") for r in rows]
        return {"preference_accuracy": sum(wins) / len(wins), "n_pairs": len(wins)}
    good = [lp(r, "completion") for r in rows if bool(r.get("label"))]
    bad = [lp(r, "completion") for r in rows if not bool(r.get("label"))]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {"logprob_desirable": mean(good), "logprob_undesirable": mean(bad),
            "logprob_margin": mean(good) - mean(bad), "n_rows": len(rows)}
