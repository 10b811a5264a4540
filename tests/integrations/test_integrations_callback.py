"""FtcalcCallback inside a real transformers Trainer on the CPU, with tiny-llama built from its catalog config.

tiny-llama (data/models/ftcalc--tiny-llama.json, about 4M parameters) gets random weights through
``AutoModelForCausalLM.from_config``; the Trainer runs 2-3 real steps on the CPU (``use_cpu=True``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ftcalc.errors import DoesNotFitError, InvalidArgumentError  # noqa: E402
from ftcalc.integrations import FtcalcCallback  # noqa: E402
from ftcalc.tables.catalog import resolve_model  # noqa: E402

SEQ = 32  # tokens per row of the toy dataset


def _model(lora: bool = False):
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(**{k: v for k, v in resolve_model("tiny-llama").config.items() if k != "architectures"})
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    return model


class _Rows(torch.utils.data.Dataset):
    def __init__(self, n: int = 8, seq: int = SEQ) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(3, 2048, (n, seq), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i].clone()}


class _StepCounter(transformers.TrainerCallback):
    """Counts the steps the Trainer began (a real callback beside ftcalc's)."""

    def __init__(self) -> None:
        self.began = 0

    def on_step_begin(self, args, state, control, **kw):
        self.began += 1


def _trainer(tmp_path: Path, cb: FtcalcCallback, lora: bool = False, steps: int = 3):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=steps, per_device_train_batch_size=2,
                             gradient_accumulation_steps=1, use_cpu=True, report_to="none", save_strategy="no",
                             logging_steps=1, optim="adamw_torch", disable_tqdm=True)
    counter = _StepCounter()
    return Trainer(model=_model(lora), args=args, train_dataset=_Rows(), callbacks=[cb, counter]), counter


def test_prints_prediction_and_trains_on_cpu(tmp_path: Path) -> None:
    out = io.StringIO()
    cb = FtcalcCallback(measure_steps=2, stream=out)
    trainer, counter = _trainer(tmp_path, cb)
    trainer.train()
    text = out.getvalue()
    assert trainer.state.global_step == 3 and counter.began == 3
    assert "predicted: peak allocated" in text and "nothing to fit against" in text
    assert "after 2 steps: no CUDA device, nothing measured" in text
    # the options come from the live args and the dataset, the architecture from the live model
    o, model = cb.options, trainer.model
    assert (o.method, o.batch_size, o.seq_len) == ("full", trainer.args.per_device_train_batch_size, SEQ)
    assert o.optimizer == trainer.args.optim.value and o.precision == "32-true"  # fp32 weights, no bf16 autocast
    assert cb.estimate.total_params == sum(p.numel() for p in model.parameters())
    assert cb.estimate.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_lora_settings_come_from_the_peft_model(tmp_path: Path) -> None:
    cb = FtcalcCallback(stream=io.StringIO(), seq_len=SEQ)
    trainer, _ = _trainer(tmp_path, cb, lora=True, steps=2)
    trainer.train()
    pc = trainer.model.peft_config["default"]
    o = cb.options
    assert (o.method, o.lora_r, o.lora_alpha, o.lora_dropout) == ("lora", pc.r, pc.lora_alpha, pc.lora_dropout)
    assert set(o.lora_targets) == set(pc.target_modules)
    assert cb.estimate.trainable_params == sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)


def test_stops_before_step_one_when_it_will_not_fit(tmp_path: Path) -> None:
    out = io.StringIO()
    cb = FtcalcCallback(gpu_memory_gib=0.05, on_oom="stop", stream=out)
    trainer, counter = _trainer(tmp_path, cb)
    with pytest.raises(DoesNotFitError, match="stopped before step 1") as e:
        trainer.train()
    assert "\n" not in str(e.value) and "0.05 GiB" in str(e.value)
    assert counter.began == 0 and trainer.state.global_step == 0
    assert cb.estimate.device_used_bytes > 0.05 * 2**30  # the estimate itself says it does not fit


def test_warn_goes_on(tmp_path: Path) -> None:
    out = io.StringIO()
    cb = FtcalcCallback(gpu_memory_gib=0.05, on_oom="warn", stream=out)
    trainer, counter = _trainer(tmp_path, cb, steps=2)
    trainer.train()
    assert "WARNING:" in out.getvalue() and "will not fit" in out.getvalue()
    assert counter.began == 2


def test_a_gpu_from_the_table_that_fits(tmp_path: Path) -> None:
    out = io.StringIO()
    cb = FtcalcCallback(gpu="h100", stream=out)
    trainer, _ = _trainer(tmp_path, cb, steps=2)
    trainer.train()
    assert "fits h100" in out.getvalue() and cb.capacity_bytes == cb.estimate.gpu_memory_bytes


def test_bad_arguments(tmp_path: Path) -> None:
    import ftcalc

    with pytest.raises(InvalidArgumentError):
        FtcalcCallback(on_oom="crash")
    with pytest.raises(InvalidArgumentError):
        FtcalcCallback(measure_steps=0)
    with pytest.raises(InvalidArgumentError, match="inside the installed ftcalc package"):
        FtcalcCallback(record_file=Path(ftcalc.__file__).parent / "data" / "rows.jsonl")
    from ftcalc.errors import UnknownGPUError

    with pytest.raises(UnknownGPUError):
        FtcalcCallback(gpu="no-such-gpu")


def test_cpu_run_records_nothing(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    cb = FtcalcCallback(measure_steps=1, record_file=rows, stream=io.StringIO())
    trainer, _ = _trainer(tmp_path, cb, steps=2)
    trainer.train()
    assert not rows.exists()  # measurements are CUDA readings; on the CPU there is nothing to record
    json.dumps(cb.trainer_config.to_dict())  # the mapping is serialisable for the row


def test_inside_trl_sft_trainer(tmp_path: Path) -> None:
    """TRL's SFTTrainer is a Trainer: the callback reads SFTConfig.max_length and names the trainer."""
    pytest.importorskip("trl")
    pytest.importorskip("datasets")
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    root = Path(__file__).resolve().parents[2]
    tok = AutoTokenizer.from_pretrained(root / "data" / "tokenizers" / "tiny-llama")
    ds = Dataset.from_dict({"text": ["the quick brown fox jumps over the lazy dog " * 8] * 8})
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2, max_length=48,
                     bf16=False, use_cpu=True, report_to="none", save_strategy="no", gradient_checkpointing=False,
                     disable_tqdm=True)
    out = io.StringIO()
    cb = FtcalcCallback(stream=out)
    trainer = SFTTrainer(model=_model(), args=args, train_dataset=ds, processing_class=tok, callbacks=[cb])
    trainer.train()
    assert trainer.state.global_step == 2 and cb.trainer_name == "trl.SFTTrainer"
    assert (cb.options.seq_len, cb.options.batch_size) == (args.max_length, args.per_device_train_batch_size)
    assert cb.options.optimizer == args.optim.value and "predicted:" in out.getvalue()


def test_a_catalog_model_is_named_by_its_catalog_id(tmp_path: Path) -> None:
    cb = FtcalcCallback(stream=io.StringIO())
    trainer, _ = _trainer(tmp_path, cb, steps=1)
    trainer.model.config._name_or_path = "tiny-llama"  # as from_pretrained sets it for a catalog checkpoint
    trainer.train()
    assert cb.estimate.model == resolve_model("tiny-llama").id
