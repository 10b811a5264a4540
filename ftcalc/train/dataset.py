"""Training data for ``ftcalc run``: JSONL in three formats, tokenized, split, packed, batched in a seeded order.

    ftcalc run spec.yaml      # data: {path: data/samples/alpaca_sample.jsonl, format: alpaca}

Formats (one JSON object per line):
- ``alpaca``: ``{"instruction", "input" (may be empty or absent), "output"}`` rendered with the Stanford
  Alpaca prompt (tatsu-lab/stanford_alpaca, train.py PROMPT_DICT) followed by the output and EOS;
- ``chat``: ``{"messages": [{"role", "content"}, ...]}`` rendered with the tokenizer's chat template
  (``apply_chat_template``); a tokenizer without one is refused;
- ``text``: ``{"text"}`` followed by EOS.

Labels: with ``train_on: all`` (the default) they are the input ids, prompt included (axolotl's
``train_on_inputs: true``); with ``train_on: completion`` only the completion trains, as TRL's SFTTrainer
(``completion_only_loss`` / ``assistant_only_loss``) and axolotl (``train_on_inputs: false``) do: the
Alpaca prompt's tokens get label -100 (Stanford Alpaca's train.py ``preprocess``: the source tokenized alone,
its length masked), and in a chat every token outside the assistant turns (each assistant turn is the
tokens that the chat template adds for that message after the generation prompt of the turns before it).
Right padding has labels -100 and attention mask 0. Masking changes no shape, so memory and step time are
the same either way. Sequences longer
than ``sequence_len`` are truncated (counted and reported). Every batch is padded to
``sequence_len`` so that memory and step time are those the estimator predicts for ``sequence_len``
(and constant from step to step); ``sample_packing`` fills the padding with the next examples instead.

Order: the validation rows are taken after a shuffle seeded by ``training.seed``; each epoch's
training order is a permutation seeded by (seed, epoch). Micro-batch ``m`` of the run is a pure
function of ``m`` (:meth:`TokenizedData.micro_batch`), so a resumed run sees exactly the batches the
uninterrupted run would have seen, without replaying a data loader.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcalc.errors import DataFileError

__all__ = ["DatasetError", "ALPACA_PROMPT", "ALPACA_PROMPT_NO_INPUT", "read_rows", "render_and_tokenize",
           "completion_masks", "TRAIN_ON",
           "TokenizedData", "build_data", "load_tokenizer", "shipped_tokenizer", "IGNORE_INDEX"]

IGNORE_INDEX = -100  # labels ignored by torch.nn.functional.cross_entropy (HF ForCausalLMLoss)

# Stanford Alpaca's prompts (tatsu-lab/stanford_alpaca, train.py PROMPT_DICT)
ALPACA_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
_MAX_SHOWN = 3  # bad lines named in a message


class DatasetError(DataFileError):
    """A dataset that cannot be trained on: missing file, malformed lines, nothing left, no chat template."""


# --------------------------------------------------------------------------- reading


def _row_problem(row: Any, fmt: str) -> str | None:
    """Why a parsed line is not a usable example of ``fmt`` (None when it is)."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    if fmt == "alpaca":
        for key in ("instruction", "output"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                return f"alpaca row needs a non-empty string '{key}' (keys: {', '.join(sorted(row)) or 'none'})"
        if not isinstance(row.get("input", ""), str):
            return "alpaca 'input' must be a string"
    elif fmt == "text":
        if not isinstance(row.get("text"), str) or not row["text"].strip():
            return f"text row needs a non-empty string 'text' (keys: {', '.join(sorted(row)) or 'none'})"
    elif fmt == "chat":
        msgs = row.get("messages")
        if not isinstance(msgs, list) or not msgs:
            return f"chat row needs a non-empty list 'messages' (keys: {', '.join(sorted(row)) or 'none'})"
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                return f"messages[{i}] needs string 'role' and 'content'"
    else:  # pragma: no cover - the spec validates the format
        return f"unknown format {fmt}"
    return None


def read_rows(path: str | Path, fmt: str, on_bad_line: str = "error") -> tuple[list[tuple[int, dict]], list[str]]:
    """Parse a JSONL file into ``(line number, row)`` pairs of the format.

    Returns:
        The usable rows and, with ``on_bad_line="skip"``, the problems skipped (``file:line: why``).
    Raises:
        DatasetError: no such file; a bad line with ``on_bad_line="error"`` (named as file:line); a file
            with no usable row.
    """
    p = Path(path)
    try:
        raw_lines = p.read_bytes().splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{p}: no such dataset file (data.path in the spec)") from None
    except OSError as e:
        raise DatasetError(f"{p}: cannot read the dataset ({e.strerror})") from None
    rows: list[tuple[int, dict]] = []
    problems: list[str] = []
    for n, raw in enumerate(raw_lines, 1):
        why = None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            why = f"not UTF-8 ({e.reason} at byte {e.start})"
        else:
            if not text.strip():
                why = "empty line"
            else:
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as e:
                    why = f"not JSON ({e.msg} at column {e.colno})"
                else:
                    why = _row_problem(row, fmt)
        if why is None:
            rows.append((n, row))
            continue
        where = f"{p}:{n}: {why}"
        if on_bad_line == "error":
            raise DatasetError(f"{where} (fix the line, or set data.on_bad_line: skip)")
        problems.append(where)
    if not rows:
        detail = f"; {len(problems)} bad lines, first: {problems[0]}" if problems else ""
        raise DatasetError(f"{p}: no usable {fmt} examples ({len(raw_lines)} lines{detail})")
    return rows, problems


# --------------------------------------------------------------------------- tokenizing


def shipped_tokenizer(model_id: str, aliases: tuple[str, ...] = ()) -> Path | None:
    """The tokenizer folder shipped in data/tokenizers/ for a catalog model (tiny-llama), if any."""
    from ftcalc._paths import data_dir

    for name in (*aliases, model_id.split("/")[-1]):
        folder = data_dir() / "tokenizers" / name
        if (folder / "tokenizer_config.json").is_file():
            return folder
    return None


def load_tokenizer(name_or_path: str) -> Any:
    """``AutoTokenizer.from_pretrained`` with the failure turned into one line naming what was tried."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except Exception as e:  # noqa: BLE001 - many causes (no such folder, offline hub, gated repo)
        raise DatasetError(f"cannot load the tokenizer '{name_or_path}' ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]}); set model.tokenizer in the spec") from None


def _with_eos(ids: list[int], eos: int | None) -> list[int]:
    return ids + [eos] if eos is not None and (not ids or ids[-1] != eos) else ids


TRAIN_ON = ("all", "completion")


def completion_masks(rows: list[tuple[int, dict]], fmt: str, tok: Any, seqs: list[list[int]],
                     where: str) -> list[list[bool]]:
    """Per token of each sequence: whether it trains under ``train_on: completion``.

    alpaca: the tokens after the rendered prompt (its token count with the tokenizer's special tokens, as
    Stanford Alpaca's train.py ``preprocess`` counts ``sources_tokenized``). chat: the tokens each assistant
    message adds after the generation prompt of the messages before it (``apply_chat_template`` of
    ``messages[:k]`` with ``add_generation_prompt=True`` against ``messages[:k + 1]``); a template whose
    renderings are not prefixes of one another is refused.
    """
    if fmt == "text":
        raise DatasetError(f"{where}: train_on completion needs a prompt to mask: format alpaca or chat "
                           "(format text has none; use train_on all)")
    out = []
    if fmt == "alpaca":
        prompts = [ALPACA_PROMPT.format(instruction=r["instruction"], input=r["input"]) if r.get("input")
                   else ALPACA_PROMPT_NO_INPUT.format(instruction=r["instruction"]) for _, r in rows]
        for ids, p in zip(seqs, tok(prompts, add_special_tokens=True)["input_ids"], strict=True):
            n = len(p)
            out.append([i >= n for i in range(len(ids))])
        return out
    for (n, row), ids in zip(rows, seqs, strict=True):
        mask = [False] * len(ids)
        msgs = row["messages"]
        for k, m in enumerate(msgs):
            if m.get("role") != "assistant":
                continue
            head = tok.apply_chat_template(msgs[:k], tokenize=True, add_generation_prompt=True, return_dict=True)
            upto = tok.apply_chat_template(msgs[:k + 1], tokenize=True, return_dict=True)
            a, b = list(head["input_ids"]), list(upto["input_ids"])
            if b[:len(a)] != a or ids[:len(b)] != b:
                raise DatasetError(f"{where}:{n}: the chat template does not render a conversation as a prefix of "
                                   "its continuation, so the assistant turns cannot be located: use train_on all")
            for i in range(len(a), len(b)):
                mask[i] = True
        out.append(mask)
    return out


def render_and_tokenize(rows: list[tuple[int, dict]], fmt: str, tok: Any, where: str) -> list[list[int]]:
    """Token ids of each row (BOS as the tokenizer adds it, EOS appended; chat: the template decides)."""
    eos = tok.eos_token_id
    if fmt == "chat":
        if not getattr(tok, "chat_template", None):
            raise DatasetError(
                f"{where}: format chat needs a chat template, and the tokenizer '{tok.name_or_path}' has none: "
                "use a tokenizer with a chat_template (model.tokenizer), or format text/alpaca"
            )
        out = []
        for n, row in rows:
            try:
                enc = tok.apply_chat_template(row["messages"], tokenize=True, return_dict=True)
            except Exception as e:  # noqa: BLE001 - jinja raises for roles the template rejects
                raise DatasetError(f"{where}:{n}: the chat template rejects this conversation "
                                   f"({type(e).__name__}: {str(e)[:200]})") from None
            out.append(list(enc["input_ids"]))
        return out
    if fmt == "alpaca":
        texts = [
            (ALPACA_PROMPT.format(instruction=r["instruction"], input=r["input"]) if r.get("input")
             else ALPACA_PROMPT_NO_INPUT.format(instruction=r["instruction"])) + r["output"]
            for _, r in rows
        ]
    else:
        texts = [r["text"] for _, r in rows]
    return [_with_eos(list(ids), eos) for ids in tok(texts, add_special_tokens=True)["input_ids"]]


# --------------------------------------------------------------------------- split, pack, batch


@dataclass
class TokenizedData:
    """Tokenized train and validation sequences (each at most ``seq_len`` tokens) and the batch order."""

    train: list[list[int]]
    val: list[list[int]]
    seq_len: int
    pad_id: int
    seed: int
    micro_batch_size: int
    gradient_accumulation_steps: int
    world_size: int = 1
    skipped: list[str] = field(default_factory=list)
    truncated: int = 0
    source_rows: int = 0
    # per token, whether it trains (train_on: completion); None: every token trains
    train_masks: list[list[bool]] | None = None
    val_masks: list[list[bool]] | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one pass over the training set (the incomplete last step is dropped)."""
        return len(self.train) // (self.micro_batch_size * self.world_size) // self.gradient_accumulation_steps

    def total_steps(self, max_steps: int | None, num_epochs: float) -> int:
        import math

        return max_steps if max_steps else max(1, math.ceil(num_epochs * self.steps_per_epoch))

    def _epoch_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.train)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)  # same on every platform and run
        return order

    def micro_batch_indices(self, m: int, rank: int = 0) -> tuple[int, list[int]]:
        """(epoch, example indices) of micro-batch ``m`` of the run for ``rank``: a pure function of m."""
        per_epoch = self.steps_per_epoch * self.gradient_accumulation_steps  # micro-batches per rank
        epoch, pos = divmod(m, per_epoch)
        order = self._epoch_order(epoch)
        start = pos * self.micro_batch_size * self.world_size + rank * self.micro_batch_size
        return epoch, order[start:start + self.micro_batch_size]

    def collate(self, seqs: list[list[int]], trains: list[list[bool]] | None = None) -> dict[str, Any]:
        """Right-padded tensors of shape (len(seqs), seq_len): input_ids, labels (-100 on padding and, with
        ``trains``, on every token that does not train), attention_mask."""
        import torch

        n = len(seqs)
        ids = torch.full((n, self.seq_len), self.pad_id, dtype=torch.long)
        labels = torch.full((n, self.seq_len), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((n, self.seq_len), dtype=torch.long)
        for i, s in enumerate(seqs):
            t = torch.tensor(s, dtype=torch.long)
            ids[i, :len(s)] = t
            lab = t.clone()
            if trains is not None:
                lab[~torch.tensor(trains[i], dtype=torch.bool)] = IGNORE_INDEX
            labels[i, :len(s)] = lab
            mask[i, :len(s)] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    def micro_batch(self, m: int, rank: int = 0) -> dict[str, Any]:
        _, idx = self.micro_batch_indices(m, rank)
        masks = None if self.train_masks is None else [self.train_masks[i] for i in idx]
        return self.collate([self.train[i] for i in idx], masks)

    def val_batches(self, rank: int = 0) -> list[dict[str, Any]]:
        """The validation set in order, this rank's share, in micro-batches (the last may be smaller).

        With several ranks the split is cut to a multiple of the world size so that every rank runs the
        same number of forward passes (FSDP's all-gathers and the stop check are collectives).
        """
        usable = len(self.val) - len(self.val) % self.world_size
        mine = self.val[:usable][rank::self.world_size]
        masks = None if self.val_masks is None else self.val_masks[:usable][rank::self.world_size]
        b = self.micro_batch_size
        return [self.collate(mine[i:i + b], None if masks is None else masks[i:i + b]) for i in range(0, len(mine), b)]


def _pack(seqs: list[list[int]], seq_len: int) -> list[list[int]]:
    """Concatenate and cut into seq_len chunks (HF run_clm.py group_texts); the tail chunk is kept, padded."""
    stream = [t for s in seqs for t in s]
    return [stream[i:i + seq_len] for i in range(0, len(stream), seq_len)]


def build_data(path: str | Path, fmt: str, tok: Any, *, seq_len: int, seed: int, val_set_size: float,
               sample_packing: bool, micro_batch_size: int, gradient_accumulation_steps: int,
               world_size: int = 1, on_bad_line: str = "error", vocab_size: int | None = None,
               train_on: str = "all") -> TokenizedData:
    """Read, tokenize, split and (optionally) pack a dataset; check that it makes at least one step.

    Raises:
        DatasetError: everything :func:`read_rows` raises; a validation split that leaves no training
            rows; too few rows for one optimizer step; token ids outside the model's vocabulary.
    """
    if train_on not in TRAIN_ON:
        raise DatasetError(f"train_on {train_on!r}: expected one of {', '.join(TRAIN_ON)}")
    rows, skipped = read_rows(path, fmt, on_bad_line)
    seqs = render_and_tokenize(rows, fmt, tok, str(path))
    masks = completion_masks(rows, fmt, tok, seqs, str(path)) if train_on == "completion" else None
    if vocab_size is not None:
        top = max((max(s) for s in seqs if s), default=0)
        if top >= vocab_size:
            raise DatasetError(f"{path}: the tokenizer '{tok.name_or_path}' produced token id {top}, but the model's "
                               f"vocab_size is {vocab_size}: use the model's own tokenizer (model.tokenizer)")
    n = len(seqs)
    n_val = int(val_set_size) if val_set_size >= 1 else round(val_set_size * n)
    if val_set_size > 0 and n_val == 0:
        n_val = 1
    if n_val >= n:
        raise DatasetError(f"{path}: val_set_size {val_set_size:g} takes {n_val} of the {n} usable rows, "
                           "leaving nothing to train on")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    val = [seqs[i] for i in sorted(order[:n_val])]
    train = [seqs[i] for i in sorted(order[n_val:])]
    val_m = None if masks is None else [masks[i] for i in sorted(order[:n_val])]
    train_m = None if masks is None else [masks[i] for i in sorted(order[n_val:])]
    truncated = 0
    if sample_packing:
        train, val = _pack(train, seq_len), _pack(val, seq_len)
        if masks is not None:  # the masks travel with their tokens
            train_m, val_m = _pack(train_m, seq_len), _pack(val_m, seq_len)
    else:
        truncated = sum(len(s) > seq_len for s in train + val)
        train = [s[:seq_len] for s in train]
        val = [s[:seq_len] for s in val]
        if masks is not None:
            train_m, val_m = [m[:seq_len] for m in train_m], [m[:seq_len] for m in val_m]
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    data = TokenizedData(train=train, val=val, seq_len=seq_len, pad_id=pad, seed=seed,
                         micro_batch_size=micro_batch_size, gradient_accumulation_steps=gradient_accumulation_steps,
                         world_size=world_size, skipped=skipped, truncated=truncated, source_rows=len(rows),
                         train_masks=train_m, val_masks=val_m)
    need = micro_batch_size * gradient_accumulation_steps * world_size
    if data.steps_per_epoch < 1:
        unit = "packed sequences" if sample_packing else "training rows"
        raise DatasetError(f"{path}: {len(train)} {unit}, fewer than one optimizer step takes "
                           f"(micro_batch_size x gradient_accumulation_steps x GPUs = {need})")
    return data
