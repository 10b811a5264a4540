"""Training data (ftcalc/train/dataset.py) and the checkpoint protocol (ftcalc/train/checkpoint.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ftcalc.train import checkpoint as ck
from ftcalc.train.dataset import (
    ALPACA_PROMPT_NO_INPUT,
    IGNORE_INDEX,
    DatasetError,
    build_data,
    read_rows,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "data" / "samples"
TOKENIZER_DIR = ROOT / "data" / "tokenizers" / "tiny-llama"


def _write(tmp_path: Path, lines: list[str], name: str = "d.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return p


# --------------------------------------------------------------------------- reading (no tokenizer)


@pytest.mark.parametrize(("line", "why"), [
    ('{"text": "ok"', "not JSON"),
    ("", "empty line"),
    ('["a list"]', "expected a JSON object"),
    ('{"body": "no text key"}', "text row needs a non-empty string 'text' (keys: body)"),
    ('{"text": "   "}', "text row needs a non-empty string 'text'"),
])
def test_bad_line_named_with_file_and_line(tmp_path, line, why):
    p = _write(tmp_path, ['{"text": "first"}', line, '{"text": "third"}'])
    with pytest.raises(DatasetError) as e:
        read_rows(p, "text")
    assert f"{p}:2: {why}" in str(e.value) and "on_bad_line: skip" in str(e.value)


def test_alpaca_and_chat_rules(tmp_path):
    p = _write(tmp_path, ['{"instruction": "i", "input": "", "output": ""}'])
    with pytest.raises(DatasetError, match=r":1: alpaca row needs a non-empty string 'output'"):
        read_rows(p, "alpaca")
    p = _write(tmp_path, ['{"messages": [{"role": "user"}]}'])
    with pytest.raises(DatasetError, match=r":1: messages\[0\] needs string 'role' and 'content'"):
        read_rows(p, "chat")
    p = _write(tmp_path, ['{"messages": []}'])
    with pytest.raises(DatasetError, match="non-empty list 'messages'"):
        read_rows(p, "chat")


def test_not_utf8(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
    with pytest.raises(DatasetError, match=r":2: not UTF-8"):
        read_rows(p, "text")


def test_skip_reports_and_keeps_line_numbers(tmp_path):
    p = _write(tmp_path, ['{"text": "a"}', "garbage", '{"text": "c"}', '{"nope": 1}'])
    rows, skipped = read_rows(p, "text", on_bad_line="skip")
    assert [n for n, _ in rows] == [1, 3]
    assert len(skipped) == 2 and skipped[0].startswith(f"{p}:2:") and skipped[1].startswith(f"{p}:4:")


def test_never_train_on_nothing(tmp_path):
    empty = _write(tmp_path, [], "empty.jsonl")
    with pytest.raises(DatasetError, match="no usable text examples \\(0 lines\\)"):
        read_rows(empty, "text")
    allbad = _write(tmp_path, ["x", "y"], "bad.jsonl")
    with pytest.raises(DatasetError, match="no usable text examples \\(2 lines; 2 bad lines, first: .*:1: not JSON"):
        read_rows(allbad, "text", on_bad_line="skip")
    with pytest.raises(DatasetError, match="no such dataset file"):
        read_rows(tmp_path / "missing.jsonl", "text")


# --------------------------------------------------------------------------- tokenized


@pytest.fixture(scope="module")
def tok():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))


def _data(tok, path, fmt, **kw):
    args = dict(seq_len=128, seed=1, val_set_size=0.0, sample_packing=False, micro_batch_size=2,
                gradient_accumulation_steps=1)
    args.update(kw)
    return build_data(path, fmt, tok, **args)


def test_alpaca_prompt_and_labels(tok, tmp_path):
    p = _write(tmp_path, ['{"instruction": "Say hi.", "output": "Hi!"}'] * 2)
    d = _data(tok, p, "alpaca")
    ids = d.train[0]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == ALPACA_PROMPT_NO_INPUT.format(instruction="Say hi.") + "Hi!"
    b = d.micro_batch(0)
    n = len(ids)
    assert b["input_ids"].shape == (2, 128)  # always padded to sequence_len
    assert b["labels"][0, :n].tolist() == ids  # labels = input ids
    assert (b["labels"][0, n:] == IGNORE_INDEX).all() and (b["attention_mask"][0, n:] == 0).all()
    assert (b["input_ids"][0, n:] == tok.pad_token_id).all()


def test_completion_only_alpaca_trains_on_the_response_alone(tok, tmp_path):
    """train_on completion: the prompt's labels are -100 (Stanford Alpaca's preprocess), the response and EOS
    train; padding stays -100; the inputs are those of train_on all."""
    p = _write(tmp_path, ['{"instruction": "Say hi.", "input": "to Ada", "output": "Hi, Ada!"}'] * 2)
    every, only = _data(tok, p, "alpaca"), _data(tok, p, "alpaca", train_on="completion")
    assert only.train == every.train
    b = only.micro_batch(0)
    ids, labels = only.train[0], b["labels"][0].tolist()
    trained = [t for t, lab in zip(ids, labels, strict=False) if lab != IGNORE_INDEX]
    assert tok.decode(trained, skip_special_tokens=True).strip() == "Hi, Ada!"
    assert trained[-1] == tok.eos_token_id and labels[len(ids):] == [IGNORE_INDEX] * (128 - len(ids))
    assert (b["input_ids"] == every.micro_batch(0)["input_ids"]).all()


def test_completion_only_chat_trains_on_the_assistant_turns(tok):
    d = _data(tok, SAMPLES / "chat_sample.jsonl", "chat", seq_len=512, train_on="completion")
    rows = [json.loads(line) for line in (SAMPLES / "chat_sample.jsonl").read_text().splitlines() if line.strip()]
    b = d.micro_batch(0)
    for i in range(2):
        ids = b["input_ids"][i].tolist()
        trained = tok.decode([t for t, lab in zip(ids, b["labels"][i].tolist(), strict=True) if lab != IGNORE_INDEX])
        row = next(r for r in rows if r["messages"][-1]["content"][:40] in tok.decode(ids))
        for m in row["messages"]:
            assert (m["content"][:30] in trained) == (m["role"] == "assistant"), (m["role"], m["content"][:30])
        assert "<|user|>" not in trained


def test_completion_only_masks_travel_with_packing(tok, tmp_path):
    lines = [json.dumps({"instruction": f"Count to {i}.", "output": " ".join(str(k) for k in range(i))})
             for i in range(3, 15)]
    p = _write(tmp_path, lines)
    plain = _data(tok, p, "alpaca", seq_len=256, train_on="completion", micro_batch_size=1)
    packed = _data(tok, p, "alpaca", seq_len=64, train_on="completion", micro_batch_size=1, sample_packing=True)
    assert sum(map(sum, plain.train_masks)) == sum(map(sum, packed.train_masks)) > 0
    assert [len(m) for m in packed.train_masks] == [len(s) for s in packed.train]


def test_completion_only_refused_for_text(tok):
    with pytest.raises(DatasetError, match="train_on completion needs a prompt"):
        _data(tok, SAMPLES / "text_sample.jsonl", "text", train_on="completion")


def test_chat_uses_template(tok):
    d = _data(tok, SAMPLES / "chat_sample.jsonl", "chat", seq_len=512)
    text = tok.decode(d.train[0])
    assert "<|user|>\n" in text and "<|assistant|>\n" in text


def test_chat_without_template_refused(tok, tmp_path):
    bare = tmp_path / "tok"
    shutil.copytree(TOKENIZER_DIR, bare)
    cfg = json.loads((bare / "tokenizer_config.json").read_text())
    cfg.pop("chat_template")
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    for extra in bare.glob("chat_template*"):
        extra.unlink()
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(str(bare))
    with pytest.raises(DatasetError, match="format chat needs a chat template.*has none"):
        _data(plain, SAMPLES / "chat_sample.jsonl", "chat")


def test_split_is_seeded_and_disjoint(tok):
    a = _data(tok, SAMPLES / "text_sample.jsonl", "text", val_set_size=0.1)
    b = _data(tok, SAMPLES / "text_sample.jsonl", "text", val_set_size=0.1)
    assert len(a.val) == 10 and len(a.train) == 90 and a.val == b.val
    assert not {tuple(s) for s in a.val} & {tuple(s) for s in a.train}
    c = _data(tok, SAMPLES / "text_sample.jsonl", "text", val_set_size=10)
    assert len(c.val) == 10


def test_order_is_a_pure_function_of_the_micro_step(tok):
    d = _data(tok, SAMPLES / "text_sample.jsonl", "text", gradient_accumulation_steps=3)
    assert d.steps_per_epoch == 100 // 2 // 3
    per_epoch = d.steps_per_epoch * 3
    first = [d.micro_batch_indices(m)[1] for m in range(per_epoch)]
    flat = [i for idx in first for i in idx]
    assert len(set(flat)) == len(flat)  # no example twice in an epoch
    assert d.micro_batch_indices(per_epoch)[0] == 1  # then the next epoch, reshuffled
    assert [d.micro_batch_indices(per_epoch + k)[1] for k in range(3)] != first[:3]
    again = _data(tok, SAMPLES / "text_sample.jsonl", "text", gradient_accumulation_steps=3)
    assert [again.micro_batch_indices(m)[1] for m in range(per_epoch)] == first


def test_ranks_get_disjoint_shares(tok):
    d = _data(tok, SAMPLES / "text_sample.jsonl", "text", world_size=2)
    r0, r1 = d.micro_batch_indices(5, rank=0)[1], d.micro_batch_indices(5, rank=1)[1]
    assert len(r0) == len(r1) == 2 and not set(r0) & set(r1)


def test_packing_fills_sequences(tok):
    d = _data(tok, SAMPLES / "text_sample.jsonl", "text", sample_packing=True, seq_len=64)
    assert all(len(s) == 64 for s in d.train[:-1]) and d.truncated == 0
    assert (d.micro_batch(0)["attention_mask"] == 1).all()


def test_truncation_counted(tok):
    d = _data(tok, SAMPLES / "alpaca_sample.jsonl", "alpaca", seq_len=32)
    assert d.truncated > 0 and max(len(s) for s in d.train) == 32


def test_nothing_left_to_train(tok, tmp_path):
    with pytest.raises(DatasetError, match="leaving nothing to train on"):
        _data(tok, SAMPLES / "text_sample.jsonl", "text", val_set_size=100)
    small = _write(tmp_path, ['{"text": "one"}', '{"text": "two"}'])
    with pytest.raises(DatasetError, match="2 training rows, fewer than one optimizer step takes.*= 4"):
        _data(tok, small, "text", gradient_accumulation_steps=2)


def test_token_ids_beyond_vocab_refused(tok):
    with pytest.raises(DatasetError, match="vocab_size is 100"):
        _data(tok, SAMPLES / "text_sample.jsonl", "text", vocab_size=100)


# --------------------------------------------------------------------------- checkpoints


def _fake_checkpoint(out: Path, step: int, keep: int = 5) -> Path:
    tmp = ck.begin_checkpoint(out, step)
    (tmp / "weights.bin").write_bytes(b"x" * step)
    return ck.finish_checkpoint(tmp, step, {}, keep=keep, log=lambda m: None)


def test_only_complete_checkpoints_count(tmp_path):
    _fake_checkpoint(tmp_path, 2)
    good = _fake_checkpoint(tmp_path, 4)
    root = ck.checkpoints_root(tmp_path)
    (root / ".tmp-step-00000006").mkdir()  # a write a kill interrupted
    (root / "step-00000008").mkdir()  # no marker
    trunc = root / "step-00000010"
    shutil.copytree(good, trunc)
    (trunc / "weights.bin").write_bytes(b"x")  # marker lists another size: a torn copy
    assert ck.latest_checkpoint(tmp_path) == (4, good)
    assert [s for s, _ in ck.complete_checkpoints(tmp_path)] == [2, 4]
    ck.remove_stale_temps(tmp_path)
    assert not (root / ".tmp-step-00000006").exists() and (root / "step-00000008").exists()


def test_rotation_keeps_newest(tmp_path):
    for step in (1, 2, 3, 4):
        _fake_checkpoint(tmp_path, step, keep=2)
    assert [s for s, _ in ck.complete_checkpoints(tmp_path)] == [3, 4]


def test_same_step_saved_twice_keeps_the_first(tmp_path):
    first = _fake_checkpoint(tmp_path, 3)
    marker = (first / ck.COMPLETE).read_text()
    again = _fake_checkpoint(tmp_path, 3)
    assert again == first and (first / ck.COMPLETE).read_text() == marker
    assert not list(ck.checkpoints_root(tmp_path).glob(".tmp-*"))
