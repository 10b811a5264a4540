"""Write docs/notebooks/capacity_planning.ipynb (the worked notebook; CI executes it: tests/test_notebook.py).

    python scripts/make_notebook.py
"""

from pathlib import Path

import nbformat as nbf

cells = [
    ("md", "# Capacity planning with ftcalc\n\nHow much GPU memory does fine-tuning Llama-3.1 take, which GPU fits, "
           "and what is the cheapest way to train on 50M tokens? Every number below comes from ftcalc's memory and time "
           "models, which were checked against real H100/H200 runs (`docs/validation.md`)."),
    ("code", "import ftcalc\nest = ftcalc.estimate('8b', method='qlora', seq_len=4096, batch_size=2, gpu='h100', "
             "dataset_tokens=50_000_000)\nest"),
    ("code", "est.to_dataframe()"),
    ("md", "## Many configurations at once\n\n`ftcalc.compare` returns one row per (model, method, GPU, sequence "
           "length, batch size)."),
    ("code", "df = ftcalc.compare(models=['8b', '70b'], methods=['lora', 'qlora'], gpus=['rtx-4090', 'a100-80gb', 'h100'],\n"
             "                    seq_lens=[2048, 8192], dataset_tokens=50_000_000)\n"
             "df[['model', 'method', 'gpu', 'seq_len', 'device_used_bytes', 'fits', 'tokens_per_second', 'hours', 'cost_usd']]"),
    ("md", "## Inverse questions\n\nThe longest context that fits Llama-3.1-8B QLoRA on a 24 GB RTX 4090, and the smallest "
           "GPU for 70B QLoRA at 8k tokens."),
    ("code", "from ftcalc.model.options import make_options\n"
             "r = ftcalc.max_fit('8b', make_options(method='qlora'), 'rtx-4090', 'seq-len')\n"
             "r.best.value, round(r.best.device_used_bytes / 2**30, 2), r.best.dominant_component"),
    ("code", "[g.gpu for g in ftcalc.min_gpu('70b', make_options(method='qlora', seq_len=8192)).fitting]"),
    ("md", "## The cheapest plans\n\n`ftcalc.recommend` searches GPU type x count x provider x method x batch layout x "
           "sharding and ranks by cost (or time)."),
    ("code", "rec = ftcalc.recommend('70b', method='qlora', dataset_tokens=50_000_000, top=8)\n"
             "rec.to_dataframe()[['rank', 'provider', 'instance_type', 'num_gpus', 'sharding', 'device_used_gib', "
             "'est_hours', 'est_cost_usd']]"),
    ("md", "## Plots"),
    ("code", "from ftcalc.viz.plots import plot_breakdown, plot_memory_sweep, plot_pareto, plot_predicted_vs_measured\n"
             "plot_breakdown([ftcalc.estimate('8b', method=m, gpu='h100') for m in ('full', 'lora', 'qlora')], gpus=['h100', 'h200']);"),
    ("code", "plot_memory_sweep('8b', 'qlora', gpus=['rtx-4090', 'l40s', 'h100']);"),
    ("code", "plot_pareto(rec);"),
    ("code", "plot_predicted_vs_measured();"),
]
nb = nbf.v4.new_notebook()
nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src) for kind, src in cells]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
out = Path(__file__).resolve().parent.parent / "docs/notebooks/capacity_planning.ipynb"
nbf.write(nb, out)
print("wrote", out)

if __name__ == "__main__" and "--execute" in __import__("sys").argv:
    import nbclient

    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(out.parent.parent.parent)}}).execute()
    nbf.write(nb, out)
    print("executed and saved with outputs")
