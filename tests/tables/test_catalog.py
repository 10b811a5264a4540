"""The model catalog (data/models/*.json): entries, aliases, published sizes, local config.json files, errors.

No torch needed: everything here goes through the analytic path.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ftcalc._paths import data_dir
from ftcalc.errors import ConfigError, UnknownModelError
from ftcalc.tables.catalog import list_models, resolve_model
from ftcalc.tables.inventory import inventory

MODELS_DIR = data_dir() / "models"
ENTRIES = {p.name: json.loads(p.read_text()) for p in sorted(MODELS_DIR.glob("*.json"))}


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


# --------------------------------------------------------------------------- the files themselves


def test_catalog_is_not_empty_and_every_file_loads() -> None:
    ids = {m.id for m in list_models()}
    assert len(ids) == len(ENTRIES) >= 30
    assert ids == {e["id"] for e in ENTRIES.values()}


@pytest.mark.parametrize("fname", sorted(ENTRIES))
def test_file_is_named_after_its_id(fname: str) -> None:
    assert fname == ENTRIES[fname]["id"].replace("/", "--") + ".json"


@pytest.mark.parametrize("fname", sorted(ENTRIES))
def test_file_has_source_date_and_config(fname: str) -> None:
    entry = ENTRIES[fname]
    assert set(entry) >= {"id", "aliases", "source", "date", "config"}
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", entry["date"]), entry["date"]
    assert isinstance(entry["config"], dict) and entry["config"].get("model_type")
    if entry["id"].startswith("ftcalc/"):  # written for ftcalc, not read from the hub
        assert entry["source"].startswith("written for ftcalc")
    else:
        assert entry["source"] == f"https://huggingface.co/{entry['id']}/blob/main/config.json"
        assert entry["config"].get("architectures"), "a published config.json names its architecture class"
        assert entry["config"].get("torch_dtype") or entry["config"].get("dtype")


@pytest.mark.parametrize("fname", sorted(ENTRIES))
def test_multimodal_entries_say_what_is_counted(fname: str) -> None:
    entry = ENTRIES[fname]
    if "text_config" not in entry["config"]:
        return
    assert "vision tower" in entry.get("notes", "") and "counts" in entry["notes"], "say what is counted"
    spec = resolve_model(entry["id"])
    assert spec.arch.model_type == entry["config"]["text_config"]["model_type"]
    if "vision_config" in entry["config"]:  # the tower is counted, never the language model alone
        assert spec.arch.vision is not None and spec.arch.vision.params > 0


# --------------------------------------------------------------------------- aliases


def test_aliases_are_lowercase_and_unique_across_the_catalog() -> None:
    seen: dict[str, str] = {}
    for entry in ENTRIES.values():
        for alias in entry["aliases"]:
            assert alias == alias.lower() == alias.strip(), f"{entry['id']}: alias {alias!r} is not lowercase"
            assert _norm(alias) not in seen, f"alias {alias!r} is on both {seen[_norm(alias)]} and {entry['id']}"
            seen[_norm(alias)] = entry["id"]


def test_no_alias_shadows_another_models_name() -> None:
    names = {}
    for entry in ENTRIES.values():
        names[_norm(entry["id"])] = entry["id"]
        names[_norm(entry["id"].split("/")[-1])] = entry["id"]
    for entry in ENTRIES.values():
        for alias in entry["aliases"]:
            owner = names.get(_norm(alias), entry["id"])
            assert owner == entry["id"], f"alias {alias!r} of {entry['id']} is the name of {owner}"


@pytest.mark.parametrize(
    "fname,alias", [(f, a) for f, e in sorted(ENTRIES.items()) for a in [e["id"], e["id"].split("/")[-1], *e["aliases"]]]
)
def test_every_name_and_alias_resolves_to_its_entry(fname: str, alias: str) -> None:
    assert resolve_model(alias).id == ENTRIES[fname]["id"]


EXPECTED_ALIASES = {
    "8b": "meta-llama/Llama-3.1-8B",
    "70b": "meta-llama/Llama-3.1-70B",
    "405b": "meta-llama/Llama-3.1-405B",
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B",
    "llama-3-70b": "meta-llama/Meta-Llama-3-70B",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B",
    "llama-3.1-70b": "meta-llama/Llama-3.1-70B",
    "llama-3.1-405b": "meta-llama/Llama-3.1-405B",
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B",
    "llama-3.2-3b": "meta-llama/Llama-3.2-3B",
    "llama-3.3-70b": "meta-llama/Llama-3.3-70B-Instruct",
    "mistral-7b": "mistralai/Mistral-7B-v0.3",
    "mixtral-8x7b": "mistralai/Mixtral-8x7B-v0.1",
    **{f"qwen2.5-{s}": f"Qwen/Qwen2.5-{s.upper()}" for s in ("0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b")},
    **{f"qwen3-{s}": f"Qwen/Qwen3-{s.upper()}" for s in ("0.6b", "1.7b", "4b", "8b", "14b", "32b")},
    **{f"gemma-2-{s}": f"google/gemma-2-{s}" for s in ("2b", "9b", "27b")},
    **{f"gemma-3-{s}": f"google/gemma-3-{s}-pt" for s in ("1b", "4b", "12b", "27b")},
    "phi-3.5-mini": "microsoft/Phi-3.5-mini-instruct",
    "phi-4": "microsoft/phi-4",
    "tiny-llama": "ftcalc/tiny-llama",
}


@pytest.mark.parametrize("alias,model_id", sorted(EXPECTED_ALIASES.items()))
def test_documented_alias_resolves(alias: str, model_id: str) -> None:
    spec = resolve_model(alias)
    assert spec.id == model_id
    assert spec.origin == "catalog"


@pytest.mark.parametrize("spelling", ["8B", " 8b ", "Llama-3.1-8B", "LLAMA_3.1_8B", "meta-llama/Llama-3.1-8B",
                                      "META-LLAMA/LLAMA-3.1-8B"])
def test_names_are_case_and_separator_insensitive(spelling: str) -> None:
    assert resolve_model(spelling).id == "meta-llama/Llama-3.1-8B"


# --------------------------------------------------------------------------- published sizes

# Total parameters as the Hugging Face hub reports them from the safetensors (tied weights once) and as the
# model cards / technical reports quote them. Each is an independent check of the catalog's shape fields.
PUBLISHED_TOTALS = {
    "meta-llama/Meta-Llama-3-8B": 8_030_261_248,
    "meta-llama/Meta-Llama-3-70B": 70_553_706_496,
    "meta-llama/Llama-3.1-8B": 8_030_261_248,
    "meta-llama/Llama-3.1-70B": 70_553_706_496,
    "meta-llama/Llama-3.1-405B": 405_853_388_800,
    "meta-llama/Llama-3.2-1B": 1_235_814_400,
    "meta-llama/Llama-3.2-3B": 3_212_749_824,
    "meta-llama/Llama-3.3-70B-Instruct": 70_553_706_496,
    "mistralai/Mistral-7B-v0.3": 7_248_023_552,
    "mistralai/Mixtral-8x7B-v0.1": 46_702_792_704,
    "Qwen/Qwen2.5-0.5B": 494_032_768,
    "Qwen/Qwen2.5-1.5B": 1_543_714_304,
    "Qwen/Qwen2.5-3B": 3_085_938_688,
    "Qwen/Qwen2.5-7B": 7_615_616_512,
    "Qwen/Qwen2.5-14B": 14_770_033_664,
    "Qwen/Qwen2.5-32B": 32_763_876_352,
    "Qwen/Qwen2.5-72B": 72_706_203_648,
    "Qwen/Qwen3-4B": 4_022_468_096,
    "Qwen/Qwen3-8B": 8_190_735_360,
    "Qwen/Qwen3-14B": 14_768_307_200,
    "Qwen/Qwen3-32B": 32_762_123_264,
    "google/gemma-2-2b": 2_614_341_888,
    "google/gemma-2-9b": 9_241_705_984,
    "google/gemma-2-27b": 27_227_128_320,
    "google/gemma-3-1b-pt": 999_885_952,
    "microsoft/Phi-3.5-mini-instruct": 3_821_079_552,
    "microsoft/phi-4": 14_659_507_200,
}

# Non-embedding parameters as quoted, rounded, by the model cards (Qwen3: "Number of Parameters
# (Non-Embedding)") and the Gemma 3 technical report (Table 1, millions; language model only).
PUBLISHED_NON_EMBEDDING = {
    "Qwen/Qwen3-0.6B": (0.44e9, 0.005e9),
    "Qwen/Qwen3-1.7B": (1.4e9, 0.05e9),
    "Qwen/Qwen3-4B": (3.6e9, 0.05e9),
    "Qwen/Qwen3-8B": (6.95e9, 0.005e9),
    "Qwen/Qwen3-14B": (13.2e9, 0.05e9),
    "Qwen/Qwen3-32B": (31.2e9, 0.05e9),
    "Qwen/Qwen2.5-7B": (6.53e9, 0.005e9),
    "Qwen/Qwen2.5-72B": (70.0e9, 0.5e9),
    "google/gemma-3-1b-pt": (698e6, 0.5e6),
    "google/gemma-3-4b-pt": (3_209e6, 0.5e6),
    "google/gemma-3-12b-pt": (10_759e6, 0.5e6),
    "google/gemma-3-27b-pt": (25_600e6, 0.5e6),
}


@pytest.mark.parametrize("model_id,total", sorted(PUBLISHED_TOTALS.items()))
def test_analytic_total_is_the_published_size(model_id: str, total: int) -> None:
    assert inventory(resolve_model(model_id).arch).total_params == total


@pytest.mark.parametrize("model_id,quoted", sorted(PUBLISHED_NON_EMBEDDING.items()))
def test_non_embedding_count_matches_the_quoted_figure(model_id: str, quoted: tuple[float, float]) -> None:
    inv = inventory(resolve_model(model_id).arch)
    non_embedding = inv.total_params - inv.params_by_kind["embed_tokens"] - inv.params_by_kind["lm_head"]
    value, half_step = quoted
    assert abs(non_embedding - value) <= half_step, f"{model_id}: {non_embedding:,} vs quoted {value:,.0f}"


def test_llama_31_family_shapes() -> None:
    """The three Llama 3.1 sizes differ only in width/depth; the 405B keeps 8 KV heads."""
    a8, a70, a405 = (resolve_model(n).arch for n in ("8b", "70b", "405b"))
    assert (a405.hidden_size, a405.num_layers, a405.num_heads, a405.num_kv_heads) == (16384, 126, 128, 8)
    assert a8.vocab_size == a70.vocab_size == a405.vocab_size == 128256
    assert a8.max_position_embeddings == a405.max_position_embeddings == 131072
    assert not (a8.tie_word_embeddings or a70.tie_word_embeddings or a405.tie_word_embeddings)


# --------------------------------------------------------------------------- errors and local files


def test_unknown_name_raises_with_a_suggestion() -> None:
    with pytest.raises(UnknownModelError) as err:
        resolve_model("llama-3.1-9b")
    msg = str(err.value)
    assert "llama-3.1-9b" in msg and "did you mean" in msg and "llama-3.1-8b" in msg


def test_unknown_name_without_close_match_still_points_to_the_list() -> None:
    with pytest.raises(UnknownModelError, match="ftcalc models"):
        resolve_model("zzzzqqqq")


@pytest.mark.parametrize("name", ["", "   "])
def test_empty_name_raises(name: str) -> None:
    with pytest.raises(UnknownModelError):
        resolve_model(name)


def test_malformed_local_config_raises_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "llama", "hidden_size": 4096,,}')
    with pytest.raises(ConfigError) as err:
        resolve_model(str(bad))
    assert str(bad) in str(err.value) and "line 1" in str(err.value)
    with pytest.raises(ConfigError):  # the folder holding it, too
        resolve_model(str(tmp_path))


def test_local_config_missing_a_field_raises_config_error(tmp_path: Path) -> None:
    cfg = dict(ENTRIES["ftcalc--tiny-llama.json"]["config"])
    del cfg["hidden_size"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="hidden_size"):
        resolve_model(str(tmp_path / "config.json"))


def test_local_config_with_unknown_model_type_raises_config_error(tmp_path: Path) -> None:
    cfg = dict(ENTRIES["ftcalc--tiny-llama.json"]["config"], model_type="mamba")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="mamba"):
        resolve_model(str(tmp_path / "config.json"))


def test_missing_local_config_raises_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError):
        resolve_model(str(tmp_path / "nope" / "config.json"))


def test_folder_holding_config_json_resolves(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(ENTRIES["meta-llama--Llama-3.1-8B.json"]["config"]))
    spec = resolve_model(str(folder))
    assert spec.origin == "file"
    assert spec.arch == resolve_model("8b").arch
    assert inventory(spec.arch).total_params == 8_030_261_248


def test_config_json_path_resolves(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(ENTRIES["ftcalc--tiny-llama.json"]["config"]))
    spec = resolve_model(str(path))
    assert spec.origin == "file" and spec.arch == resolve_model("tiny-llama").arch
