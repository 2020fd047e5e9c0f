"""A tiny local Llama and its tokenizer, trained from the workspace's own text in about a second.

It lets the whole loop (corpus → SFT → eval) run on a laptop CPU with no downloads. Choices that
matter, measured on the demo world: a byte-level BPE (short sequences beat a character tokenizer),
digits split one per token (so numbers are copied from tool results instead of memorised as
chunks), and Llama rather than Qwen2 (a Qwen2 config reloads a different tokenizer class that
encodes differently).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipeline.chat.tracemill import CHAT_TEMPLATE, END, MARKUP_TOKENS, PAD, SPECIAL_TOKENS
from pipeline.train.tracked_run import quiet_progress


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """A byte-level BPE (every byte is in the alphabet, so nothing is ever unknown) wrapped as a
    `PreTrainedTokenizerFast` with our chat template, `<|end|>` as EOS and `<|pad|>` as padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    # Markup is one token each but not "special": decoding with skip_special_tokens keeps tool calls.
    tok.add_tokens(MARKUP_TOKENS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=END, pad_token=PAD,
                                   additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (END, PAD)],
                                   chat_template=CHAT_TEMPLATE, model_max_length=1 << 30)


def build_tiny_model(texts: Iterable[str], out_dir: str | Path, *, vocab_size: int = 512, hidden_size: int = 128,
                     num_layers: int = 2, num_heads: int = 4, max_position: int = 1024,
                     intermediate_size: int | None = None, seed: int = 0) -> Path:
    """Train the tokenizer on `texts`, initialise a `LlamaForCausalLM` from `seed`, and save both
    with `save_pretrained` so `AutoTokenizer`/`AutoModelForCausalLM.from_pretrained(out_dir)` reload
    them. The same texts and seed give the same files."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(list(texts), vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_position, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    with quiet_progress():
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
