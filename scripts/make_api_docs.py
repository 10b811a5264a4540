"""docs/api.md: the Python API reference, generated from the docstrings (regenerate after changes).

    python scripts/make_api_docs.py
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = [
    ("ftcalc.model.estimator", ["estimate", "estimate_options", "Estimate"]),
    ("ftcalc.model.comparison", ["compare"]),
    ("ftcalc.model.fit", ["max_fit", "min_gpu", "MaxFit", "MinGPU"]),
    ("ftcalc.solver.search", ["recommend", "Recommendation", "Plan"]),
    ("ftcalc.model.memory", ["estimate_memory", "weights_bytes", "quantized_linear_bytes", "lora_params", "gradient_bytes",
                       "optimizer_state_bytes", "optimizer_step_transient_bytes", "activation_terms_per_token",
                       "checkpoint_bytes", "logits_bytes", "autocast_weight_copy_bytes", "kv_cache_bytes",
                       "resolve_attention", "Coefficients", "load_coefficients"]),
    ("ftcalc.model.throughput", ["flops_per_token", "step_seconds", "tokens_per_second", "ThroughputCoefficients"]),
    ("ftcalc.tables.catalog", ["resolve_model", "list_models", "architecture_from_config", "Architecture", "ModelSpec"]),
    ("ftcalc.tables.inventory", ["inventory", "exact_inventory", "Inventory", "LinearGroup"]),
    ("ftcalc.model.options", ["TrainingOptions", "make_options"]),
    ("ftcalc.tables.hardware", ["get_gpu", "load_gpus", "GPU"]),
    ("ftcalc.tables.pricing", ["load_prices", "cheapest_instances"]),
    ("ftcalc.model.parallel", ["estimate_parallel", "ParallelEstimate"]),
    ("ftcalc.model.sharding", ["allocated_per_gpu", "device_used_per_gpu", "collective_pool_bytes", "step_seconds_parallel"]),
    ("ftcalc.measure.calibrate", ["load_measurements", "is_validation", "predict_row", "validate_rows", "fit_memory",
                          "fit_throughput", "summarize", "is_multi_gpu_validation", "validate_multi_gpu_rows"]),
    ("ftcalc.measure.profile", ["profile", "record_rows"]),
    ("ftcalc.train.recipe", ["build_model", "build_model_sharded", "make_accelerator", "apply_training_setup",
                       "build_optimizer", "train_step"]),
    ("ftcalc.train.spec", ["TrainingSpec"]),
    ("ftcalc.train.runner", ["run"]),
    ("ftcalc.viz.plots", ["plot_breakdown", "plot_memory_sweep", "plot_pareto", "plot_predicted_vs_measured"]),
    ("ftcalc.viz.report", ["write_report"]),
]


def main() -> None:
    out = ["# Python API reference", "", "Generated from the docstrings by `python scripts/make_api_docs.py`. "
           "`import ftcalc` exposes `estimate`, `compare`, `recommend`, `max_fit`, `min_gpu`, `resolve_model`, "
           "`list_models`; everything else lives in the modules below. No function here imports torch unless it "
           "trains or measures (recipe, profile, executor).", ""]
    for mod_name, names in PUBLIC:
        mod = importlib.import_module(mod_name)
        out += [f"## `{mod_name}`", "", (inspect.getdoc(mod) or "").split("\n\n")[0], ""]
        for name in names:
            obj = getattr(mod, name, None)
            if obj is None:
                continue
            try:
                sig = str(inspect.signature(obj)) if not inspect.isclass(obj) else ""
            except (TypeError, ValueError):
                sig = ""
            kind = "class" if inspect.isclass(obj) else "def"
            out += [f"### `{kind} {name}{sig}`" if len(sig) < 300 else f"### `{kind} {name}(...)`", "",
                    inspect.getdoc(obj) or "(no docstring)", ""]
    (ROOT / "docs/api.md").write_text("\n".join(out))
    print(f"wrote docs/api.md ({len(out)} lines)")


if __name__ == "__main__":
    main()
