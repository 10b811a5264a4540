"""The bundled sample data (data/samples/) and the tiny-llama tokenizer (data/tokenizers/tiny-llama/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"
TOKENIZER_DIR = ROOT / "data" / "tokenizers" / "tiny-llama"
MODEL_JSON = ROOT / "data" / "models" / "ftcalc--tiny-llama.json"

# Nothing in these tests may reach the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _rows(name: str) -> list[dict]:
    path = SAMPLES / name
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            assert line.strip(), f"{name}:{n}: blank line"
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:  # pragma: no cover - the message is the point
                pytest.fail(f"{name}:{n}: not JSON: {e}")
    return rows


@pytest.mark.parametrize(
    ("name", "min_rows"),
    [("alpaca_sample.jsonl", 250), ("chat_sample.jsonl", 90), ("text_sample.jsonl", 90)],
)
def test_sample_file_size(name, min_rows):
    path = SAMPLES / name
    assert path.stat().st_size < 200_000
    assert len(_rows(name)) >= min_rows


def test_alpaca_rows():
    rows = _rows("alpaca_sample.jsonl")
    for n, row in enumerate(rows, 1):
        assert set(row) == {"instruction", "input", "output"}, n
        assert all(isinstance(v, str) for v in row.values()), n
        assert row["instruction"].strip() and row["output"].strip(), n
    empty = sum(1 for r in rows if not r["input"])
    assert 0 < empty < len(rows)  # both shapes occur
    assert len({(r["instruction"], r["input"]) for r in rows}) == len(rows)  # no duplicates


def test_chat_rows():
    for n, row in enumerate(_rows("chat_sample.jsonl"), 1):
        assert set(row) == {"messages"}, n
        msgs = row["messages"]
        assert isinstance(msgs, list) and len(msgs) >= 2, n
        for m in msgs:
            assert set(m) == {"role", "content"}, n
            assert m["role"] in {"system", "user", "assistant"}, n
            assert isinstance(m["content"], str) and m["content"].strip(), n
        roles = [m["role"] for m in msgs]
        assert "system" not in roles[1:], n
        turns = roles[1:] if roles[0] == "system" else roles
        assert turns[0] == "user" and turns[-1] == "assistant", n
        assert all(a != b for a, b in zip(turns, turns[1:], strict=False)), n  # user and assistant alternate


def test_text_rows():
    for n, row in enumerate(_rows("text_sample.jsonl"), 1):
        assert set(row) == {"text"}, n
        assert isinstance(row["text"], str) and row["text"].strip(), n


def _script_constant(name: str) -> str:
    for line in (ROOT / "scripts" / "make_tiny_tokenizer.py").read_text().splitlines():
        if line.startswith(f"{name} = "):
            return line.split("=", 1)[1].strip().strip('"')
    raise AssertionError(f"{name} not found in make_tiny_tokenizer.py")


# --- tokenizer ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True)


def test_tokenizer_files_present():
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (TOKENIZER_DIR / name).is_file(), name
    cfg = json.loads((TOKENIZER_DIR / "tokenizer_config.json").read_text())
    assert cfg["chat_template"]


def test_tokenizer_size_matches_model(tok):
    vocab_size = json.loads(MODEL_JSON.read_text())["config"]["vocab_size"]
    assert vocab_size == 2048
    assert len(tok) <= vocab_size
    assert max(tok.get_vocab().values()) < vocab_size
    assert len(tok) == 2048  # the model's embedding table is fully used


def test_special_token_ids(tok):
    cfg = json.loads(MODEL_JSON.read_text())["config"]
    assert tok.pad_token == "<pad>" and tok.pad_token_id == 0 == cfg["pad_token_id"]
    assert tok.bos_token == "<s>" and tok.bos_token_id == 1 == cfg["bos_token_id"]
    assert tok.eos_token == "</s>" and tok.eos_token_id == 2 == cfg["eos_token_id"]


@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox jumps over the lazy dog.",
        "Fine-tune a 7B model with LoRA (r=16) on 2x H100: 80 GB each, bf16.",
        "Unicode survives too: café, naïve, 東京, 🙂",
        "  leading spaces,\ttabs\nand newlines  ",
    ],
)
def test_round_trip(tok, text):
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert all(0 <= i < 2048 for i in ids)
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_padding_uses_pad_id(tok):
    batch = tok(["short", "a somewhat longer sentence"], padding=True)
    assert batch["input_ids"][0][-1] == 0
    assert batch["attention_mask"][0][-1] == 0


def test_chat_template(tok):
    row = json.loads((SAMPLES / "chat_sample.jsonl").read_text(encoding="utf-8").splitlines()[0])
    msgs = row["messages"]
    text = tok.apply_chat_template(msgs, tokenize=False)
    for m in msgs:
        assert f"<|{m['role']}|>\n{m['content']}</s>" in text
    ids = tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert ids.count(tok.bos_token_id) == 1
    assert ids.count(tok.eos_token_id) == len(msgs)
    assert tok.decode(ids) == text

    prompt = tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>\n")
    assert text.startswith(prompt)


def test_chat_template_assistant_mask(tok):
    msgs = [
        {"role": "user", "content": "What is 7 times 8?"},
        {"role": "assistant", "content": "56."},
    ]
    out = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tok.decode(masked) == "56.</s>"


def test_tokenizer_is_up_to_date():
    """Rebuilding from the samples gives the committed files byte for byte.

    BPE training output may change between `tokenizers` releases, so this only runs on the
    release line that built the committed files (BUILT_WITH in the script)."""
    tokenizers = pytest.importorskip("tokenizers")
    built_with = _script_constant("BUILT_WITH")
    if not tokenizers.__version__.startswith(built_with + "."):
        pytest.skip(
            f"committed tokenizer was built with tokenizers {built_with}.x, not {tokenizers.__version__}"
        )
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_tiny_tokenizer.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
