#!/usr/bin/env python
"""Train the tiny byte-level BPE tokenizer for the ftcalc/tiny-llama model.

The tokenizer is trained on the sample data in data/samples/ and written to
data/tokenizers/tiny-llama/ as a transformers fast tokenizer:

    tokenizer.json            the `tokenizers` pipeline (byte-level BPE)
    tokenizer_config.json     special tokens, model_max_length, chat_template
    special_tokens_map.json   bos/eos/pad/unk

It must agree with data/models/ftcalc--tiny-llama.json: vocab_size 2048, pad id 0,
bos id 1, eos id 2. Nothing is downloaded; loading is fully offline:

    AutoTokenizer.from_pretrained("data/tokenizers/tiny-llama")

Usage: python scripts/make_tiny_tokenizer.py [--out DIR] [--check]
(--check rebuilds into a temporary folder and fails if the result differs from
the committed files).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import sys
import tempfile
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"
OUT = ROOT / "data" / "tokenizers" / "tiny-llama"
MODEL_JSON = ROOT / "data" / "models" / "ftcalc--tiny-llama.json"

VOCAB_SIZE = 2048
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # ids 0, 1, 2, 3
MODEL_MAX_LENGTH = 2048
# The `tokenizers` release line the committed files were built with; BPE training output can differ
# between release lines, so tests/test_samples.py only checks reproducibility on this one.
BUILT_WITH = "0.23"

# Each message is "<|role|>\n" + content + "</s>\n". The bos token opens the conversation, because
# apply_chat_template tokenizes without adding special tokens. Assistant turns are wrapped in
# {% generation %} so that return_assistant_tokens_mask=True can mask the loss to them.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}"
    "{{ message['content'] + eos_token }}"
    "{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def corpus() -> list[str]:
    """Training texts, in the shapes the fine-tuning code will feed the tokenizer."""
    texts: list[str] = []
    for row in _read_jsonl(SAMPLES / "alpaca_sample.jsonl"):
        prompt = f"### Instruction:\n{row['instruction']}\n\n"
        if row["input"]:
            prompt += f"### Input:\n{row['input']}\n\n"
        texts.append(prompt + f"### Response:\n{row['output']}")
    for row in _read_jsonl(SAMPLES / "chat_sample.jsonl"):
        texts.append("".join(f"<|{m['role']}|>\n{m['content']}\n" for m in row["messages"]))
    for row in _read_jsonl(SAMPLES / "text_sample.jsonl"):
        texts.append(row["text"])
    return texts


def train() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    # Like Llama: a bos token in front of every sequence, no eos (the data pipeline adds eos).
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, tok.token_to_id(BOS))],
    )
    return tok


def check_ids(tok: Tokenizer) -> None:
    size = tok.get_vocab_size(with_added_tokens=True)
    if size != VOCAB_SIZE:
        sys.exit(f"trained vocab has {size} tokens, expected {VOCAB_SIZE}: the corpus is too small")
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            sys.exit(f"{t} has id {tok.token_to_id(t)}, expected {i}")
    cfg = json.loads(MODEL_JSON.read_text())["config"]
    want = {"vocab_size": size, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    for k, v in want.items():
        if cfg.get(k) != v:
            sys.exit(f"{MODEL_JSON.name}: {k} is {cfg.get(k)}, the tokenizer needs {v}")


def _dump(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save(tok: Tokenizer, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"), pretty=True)
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": UNK}
    added = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in enumerate(SPECIAL_TOKENS)
    }
    # Written by hand rather than by save_pretrained so the files do not depend on the
    # transformers version that happens to be installed (4.x and 5.x both read them).
    _dump(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": True,
            "add_eos_token": False,
            "added_tokens_decoder": added,
            **special,
            "clean_up_tokenization_spaces": False,
            "model_max_length": MODEL_MAX_LENGTH,
            "padding_side": "right",
            "chat_template": CHAT_TEMPLATE,
        },
    )
    _dump(out / "special_tokens_map.json", special)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="fail if a rebuild differs from --out")
    args = ap.parse_args()

    tok = train()
    check_ids(tok)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            save(tok, Path(tmp))
            names = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
            _, diff, missing = filecmp.cmpfiles(tmp, args.out, names, shallow=False)
            if diff or missing:
                sys.exit(f"{args.out} is stale (differs: {diff}, missing: {missing}); rerun without --check")
        print(f"{args.out}: up to date")
        return
    save(tok, args.out)
    print(f"wrote {args.out} ({tok.get_vocab_size()} tokens)")


if __name__ == "__main__":
    main()
