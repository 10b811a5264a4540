"""What `ftcalc plan --emit skypilot|accelerate` puts beside a spec so that it runs on a fresh node.

A SkyPilot task syncs its ``workdir`` (the spec's folder) to every node, runs ``setup`` there once and
``run`` on every node (docs.skypilot.co: reference/yaml-spec, running-jobs/distributed-jobs). So the
folder must hold everything the spec names, and ``setup`` must install this very ftcalc:

- **ftcalc itself** travels as a wheel in ``ftcalc_dist/`` of the workdir: built from the source checkout
  (``pip wheel --no-deps``) or repacked from the installed distribution's files (its RECORD). No package
  index entry is needed, and the node runs the code that made the prediction.
- **The training libraries** are pinned to the versions the estimate was validated with: the most common
  ``versions`` of the measurement rows (data/measurements/runs-*.jsonl, written by ``ftcalc profile``).
  torch is pinned only where a node has none: a node image's own torch (a CUDA build on GPU images) is
  kept when it satisfies the ``[train]`` range, rather than downloading another multi-GB build.
- **The dataset** inside the workdir is referenced relatively; one outside is copied into
  ``ftcalc_data/`` (up to :data:`COPY_LIMIT_BYTES`) or read from a bucket folder mounted through
  ``file_mounts`` (``--data-url``).
- **Checkpoints** go to a bucket mounted at :data:`CHECKPOINT_MOUNT` with ``--checkpoint-url``, so a
  recovered spot job (``sky jobs launch``) resumes from the newest complete one.

Nothing here imports torch.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ftcalc.errors import InvalidArgumentError
from ftcalc.train.spec import DECODER_LAYER_CLASSES, BlockDumper, SpecError, TrainingSpec, resolve_path

__all__ = ["COPY_LIMIT_BYTES", "CHECKPOINT_MOUNT", "DATA_MOUNT", "WHEEL_DIR", "NodeLayout", "build_wheel",
           "plan_fits", "prepare_workdir", "setup_script", "validated_versions"]

WHEEL_DIR = "ftcalc_dist"
DATA_DIR = "ftcalc_data"
DATA_MOUNT = "/ftcalc-data"
CHECKPOINT_MOUNT = "/ftcalc-checkpoints"
# SkyPilot rsyncs the workdir to every node at each launch; a larger dataset belongs in a bucket
COPY_LIMIT_BYTES = 200 * 2**20
_LIBRARIES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes")


def validated_versions() -> dict[str, str]:
    """The library versions most measurement rows were taken with (``versions`` of runs-*.jsonl).

    Local version tags (``2.11.0+cu130``) are dropped: the node's index decides the build.
    """
    from ftcalc._paths import data_dir

    counts: Counter[tuple[tuple[str, str], ...]] = Counter()
    for f in sorted((data_dir() / "measurements").glob("runs-*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                v = json.loads(line).get("versions") or {}
            except (json.JSONDecodeError, AttributeError):
                continue
            if all(k in v for k in _LIBRARIES):
                counts[tuple((k, str(v[k]).split("+")[0]) for k in _LIBRARIES)] += 1
    if not counts:
        raise InvalidArgumentError(f"no measurement rows with library versions in {data_dir() / 'measurements'}: "
                                   "cannot pin the libraries the estimate was validated with")
    return dict(counts.most_common(1)[0][0])


# --------------------------------------------------------------------------- the wheel


def build_wheel(dest: Path) -> Path:
    """This ftcalc as a wheel in ``dest`` (older ftcalc wheels there are removed); returns its path."""
    from ftcalc._paths import repo_root

    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ftcalc-wheel-") as tmp:
        root = repo_root()
        if root is not None:
            r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp, str(root)],
                               capture_output=True, text=True)
            built = list(Path(tmp).glob("ftcalc-*.whl"))
            if r.returncode != 0 or len(built) != 1:
                tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no wheel written"]
                raise InvalidArgumentError(f"could not build ftcalc's wheel from {root} for the node "
                                           f"(pip wheel: {tail[0]})")
            wheel = built[0]
        else:
            wheel = _repack_installed(Path(tmp))
        for old in dest.glob("ftcalc-*.whl"):
            old.unlink()
        return Path(shutil.copy2(wheel, dest / wheel.name))


def _repack_installed(tmp: Path) -> Path:
    """A wheel of the installed (non-editable) ftcalc from the files its RECORD lists (PEP 376/427)."""
    from importlib.metadata import distribution

    dist = distribution("ftcalc")
    direct = dist.read_text("direct_url.json")
    if direct and json.loads(direct).get("dir_info", {}).get("editable"):
        raise InvalidArgumentError("this ftcalc is an editable install whose source is not beside it; run "
                                   "`ftcalc plan --emit skypilot` from the source checkout")
    files = [f for f in (dist.files or []) if not str(f).endswith(".pyc") and "__pycache__" not in str(f)]
    info = next(str(f).split("/")[0] for f in files if str(f).endswith(".dist-info/METADATA"))
    name = f"{info.removesuffix('.dist-info')}-py3-none-any.whl"
    keep = {"METADATA", "WHEEL", "entry_points.txt", "top_level.txt", "LICENSE"}
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(tmp / name, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            rel = str(f)
            if rel.startswith(info + "/") and rel.split("/", 1)[1] not in keep:
                continue  # RECORD is written anew; INSTALLER, direct_url.json belong to the install
            if rel.startswith(".."):
                continue  # scripts outside site-packages: the installer writes them from entry_points.txt
            data = Path(f.locate()).read_bytes()
            z.writestr(rel, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            writer.writerow([rel, f"sha256={digest}", len(data)])
        writer.writerow([f"{info}/RECORD", "", ""])
        z.writestr(f"{info}/RECORD", record.getvalue())
    return tmp / name


def setup_script(wheel_rel: str, versions: dict[str, str]) -> str:
    """The task's ``setup``: torch only if the node has none, then the pinned libraries and this ftcalc's wheel.

    ``--force-reinstall --no-deps`` for the wheel: a reused cluster with an ftcalc of the same version
    number still gets this build.
    """
    libs = " ".join(f"'{k}=={versions[k]}'" for k in _LIBRARIES if k != "torch")
    return (
        "set -e\n"
        "# torch: the node image's own build is kept when ftcalc[train]'s range accepts it; else the validated one\n"
        f"python -c 'import torch' 2>/dev/null || python -m pip install 'torch=={versions['torch']}'\n"
        f"python -m pip install {libs} '{wheel_rel}[train]'\n"
        f"python -m pip install --force-reinstall --no-deps '{wheel_rel}'\n"
    )


# --------------------------------------------------------------------------- the workdir


@dataclass
class NodeLayout:
    """Where things are on a node: the spec to write, the file mounts, the run's output dir."""

    spec: Any
    file_mounts: dict[str, Any] = field(default_factory=dict)
    output_dir: str = "run"
    notes: list[str] = field(default_factory=list)


def _inside(p: Path, folder: Path) -> str | None:
    rel = os.path.relpath(p.resolve(), folder.resolve())
    return None if rel.startswith("..") or os.path.isabs(rel) else rel


def prepare_workdir(spec: Any, folder: Path, *, data_url: str | None = None, checkpoint_url: str | None = None,
                    copy_limit_bytes: int = COPY_LIMIT_BYTES) -> NodeLayout:
    """The spec as the node sees it, with the dataset made reachable from ``folder`` (the workdir).

    Raises InvalidArgumentError for a local path the node cannot have (a model or tokenizer folder
    outside the workdir; a dataset over the copy limit without ``data_url``).
    """
    folder = Path(folder)
    spec_file = folder / "spec.yaml"  # any name: paths resolve against the folder
    notes: list[str] = []
    for key in ("base_model", "tokenizer"):
        val = getattr(spec.model, key)
        if val and resolve_path(val, spec_file).exists():
            local = resolve_path(val, spec_file)
            if _inside(local, folder) is None:
                raise InvalidArgumentError(
                    f"model.{key} {val} is a local folder outside the task's workdir {folder.resolve()}: the node "
                    f"will not have it; move it under {folder.resolve()} or name a hub id")
            if os.path.isabs(val):
                spec = spec.model_copy(update={"model": spec.model.model_copy(update={key: _inside(local, folder)})})
    data = resolve_path(spec.data.path, spec_file)
    if data_url:
        if not data.is_file():
            raise InvalidArgumentError(f"--data-url: the dataset {data} is not a file here; ftcalc plan reads it to "
                                       "count tokens, and the bucket folder must hold the same file")
        new_path = f"{DATA_MOUNT}/{data.name}"
        mounts: dict[str, Any] = {DATA_MOUNT: {"source": data_url.rstrip("/"), "mode": "COPY"}}
        notes.append(f"the node reads the dataset as {new_path}: upload {data} to {data_url.rstrip('/')}/{data.name}")
    else:
        mounts = {}
        rel = _inside(data, folder)
        if rel is None:
            size = data.stat().st_size
            if size > copy_limit_bytes:
                raise InvalidArgumentError(
                    f"dataset {data} is {size / 2**20:,.0f} MiB, outside the task's workdir and over the "
                    f"{copy_limit_bytes / 2**20:,.0f} MiB copy limit: upload it to a bucket folder and pass "
                    "--data-url s3://BUCKET/FOLDER (or gs://, r2://...), or move it under the spec's folder")
            target = folder / DATA_DIR / data.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(data, target)
            rel = f"{DATA_DIR}/{data.name}"
            notes.append(f"copied the dataset ({size / 2**20:,.1f} MiB) into the workdir as {rel}")
        new_path = rel
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"path": new_path})})
    out = spec.output.output_dir
    if checkpoint_url:
        mounts[CHECKPOINT_MOUNT] = {"source": checkpoint_url.rstrip("/"), "mode": "MOUNT"}
        out = f"{CHECKPOINT_MOUNT}/{Path(out).name or 'run'}"
    elif spec.hardware.num_nodes > 1:
        notes.append("without --checkpoint-url the checkpoints stay on node 0's disk: a recovered spot job starts "
                     "again from step 0")
    return NodeLayout(spec=spec, file_mounts=mounts, output_dir=out, notes=notes)


def plan_fits(spec: Any, model: str | None = None) -> tuple[bool | None, str | None]:
    """Whether the estimator says the spec fits its GPU (None: no GPU named), and why not.

    ``model``: the name ``ftcalc plan`` was given (a local folder resolves against the current directory).
    """
    if spec.hardware.device != "cuda" or not spec.hardware.gpu:
        return None, None
    from ftcalc.model.estimator import estimate_options
    from ftcalc.tables.catalog import resolve_model

    hw = spec.hardware
    if hw.num_nodes == 1:
        est = estimate_options(resolve_model(model or spec.model.base_model), spec.to_options(), gpu=hw.gpu)
        return est.fits, est.fit_note
    # several nodes: the per-GPU memory over the whole world that ftcalc plan predicted (train/plan.py,
    # estimate_parallel with one instance per node); the estimator itself plans one node
    from ftcalc.tables.hardware import get_gpu

    used = spec.predicted.device_used_bytes
    if used is None:
        return None, None
    cap = get_gpu(hw.gpu).memory_bytes
    if used <= cap:
        return True, None
    return False, (f"needs {used / 1e9:.1f} GB per GPU under {spec.distribution.strategy} on {hw.world_size} GPUs, "
                   f"the GPU has {cap / 1e9:.1f} GB")


# ftcalc GPU slug -> SkyPilot accelerator name (`sky show-gpus`); others: the slug upper-cased
_SKYPILOT_ACCELERATORS = {
    "h100-sxm": "H100", "h100-pcie": "H100", "h100-nvl": "H100-NVL", "h200": "H200", "b200": "B200",
    "a100-80gb-sxm": "A100-80GB", "a100-80gb-pcie": "A100-80GB", "a100-40gb-sxm": "A100", "l40s": "L40S",
    "l4": "L4", "a10g": "A10G", "a10": "A10", "rtx-4090": "RTX4090", "rtx-6000-ada": "RTX6000-Ada",
    "mi300x": "MI300X",
}


def accelerate_launch_line(spec: TrainingSpec, spec_name: str = "spec.yaml", config_name: str = "accelerate_config.yaml",
                           output_dir: str | None = None) -> str:
    """The shell line that starts this spec with ``accelerate launch`` on one node (SkyPilot's variables give the
    node's rank and the head node's IP on several; ``MASTER_PORT`` defaults to 29500)."""
    import shlex

    out = shlex.quote(output_dir or spec.output.output_dir)
    line = f"accelerate launch --config_file {shlex.quote(config_name)}"
    if spec.hardware.num_nodes > 1:
        line += (' --machine_rank "$SKYPILOT_NODE_RANK" --main_process_ip "$(echo "$SKYPILOT_NODE_IPS" | head -n1)"'
                 ' --main_process_port "${MASTER_PORT:-29500}"')
    return f"{line} -m ftcalc.executor {shlex.quote(spec_name)} --output-dir {out} --resume"


def emit_accelerate_config(spec: TrainingSpec, model_type: str | None = None, spec_name: str = "spec.yaml",
                           output_dir: str | None = None) -> str:
    """An accelerate config file (``accelerate launch --config_file``) for the spec's distribution.

    ``mixed_precision`` is ``no`` because the recipe applies bf16 autocast itself (ftcalc/train/recipe.py);
    the FSDP section uses accelerate's FSDP2 keys (trl/accelerate_configs/fsdp2.yaml). Several processes
    use accelerate's torchrun launcher (``MULTI_GPU``/``FSDP``) with a static rendezvous at the head node's
    ``main_process_ip``/``main_process_port``, also for a cpu spec: accelerate launches ``use_cpu`` configs
    of several machines through mpirun (accelerate/utils/launch.py, prepare_simple_launcher_cmd_env), while
    under torchrun the executor keeps a cpu spec's processes on the CPU and accelerate picks gloo.
    """
    hw, dist = spec.hardware, spec.distribution
    cfg: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": {"single": "NO", "ddp": "MULTI_GPU", "fsdp": "FSDP"}[dist.strategy],
        "mixed_precision": "no",
        "num_machines": hw.num_nodes,
        "num_processes": hw.world_size,
        "machine_rank": 0,
        "gpu_ids": "all",
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": hw.device == "cpu" and hw.world_size == 1,
        "downcast_bf16": "no",
    }
    if dist.strategy == "fsdp":
        f = dist.fsdp
        fsdp: dict[str, Any] = {
            "fsdp_version": f.fsdp_version,
            "fsdp_auto_wrap_policy": f.auto_wrap_policy,
            "fsdp_reshard_after_forward": f.reshard_after_forward,
            "fsdp_offload_params": f.offload_params,
            "fsdp_state_dict_type": f.state_dict_type,
            "fsdp_cpu_ram_efficient_loading": f.cpu_ram_efficient_loading,
            "fsdp_activation_checkpointing": False,  # the recipe's gradient_checkpointing does it
        }
        if model_type in DECODER_LAYER_CLASSES:
            fsdp["fsdp_transformer_layer_cls_to_wrap"] = DECODER_LAYER_CLASSES[model_type]
        cfg["fsdp_config"] = fsdp
    where = "on every node" if hw.num_nodes > 1 else "in the spec's folder"
    head = ("# accelerate config for this ftcalc spec, written by ftcalc plan --emit accelerate.\n"
            "# ftcalc run starts the processes itself; this file is for starting them with accelerate, "
            f"{where}:\n#   {accelerate_launch_line(spec, spec_name, output_dir=output_dir)}\n")
    return head + yaml.safe_dump(cfg, sort_keys=False)


def emit_skypilot_task(spec: TrainingSpec, spec_name: str = "spec.yaml", setup: str | None = None, *,
                       file_mounts: dict[str, Any] | None = None, output_dir: str | None = None,
                       does_not_fit: str | None = None) -> str:
    """A SkyPilot task YAML: the GPUs (or CPUs), the node count, setup, file mounts, and ``ftcalc run``.

    ``run`` is ``ftcalc run SPEC --resume`` on every node: with several nodes the executor starts torchrun
    with SkyPilot's SKYPILOT_NODE_RANK, SKYPILOT_NODE_IPS, SKYPILOT_NUM_NODES and
    SKYPILOT_NUM_GPUS_PER_NODE (ftcalc.train.runner.node_rendezvous;
    https://docs.skypilot.co/en/latest/running-jobs/distributed-jobs.html). ``--resume`` makes a recovered
    spot job continue from its newest complete checkpoint (``output_dir`` on a bucket mount). ``setup``
    defaults to :func:`ftcalc.train.launch.setup_script` for this version's wheel in ``ftcalc_dist/``, which
    ``ftcalc plan --emit skypilot`` builds. ``does_not_fit``: the estimator's reason, written in the header
    of a task emitted anyway (``--force``).
    """
    import shlex

    from ftcalc._version import __version__

    hw = spec.hardware
    if hw.device == "cuda":
        if not hw.gpu:
            raise SpecError("--emit skypilot needs a GPU plan: pass --gpu (or --device cpu for a CPU task)")
        from ftcalc.tables.hardware import get_gpu

        slug = get_gpu(hw.gpu).gpu
        resources: dict[str, Any] = {"accelerators": f"{_SKYPILOT_ACCELERATORS.get(slug, slug.upper())}:{hw.num_gpus}"}
    else:
        resources = {"cpus": f"{2 * hw.num_gpus}+"}
    out = output_dir or spec.output.output_dir
    if setup is None:
        setup = setup_script(f"{WHEEL_DIR}/ftcalc-{__version__}-py3-none-any.whl", validated_versions())
    task: dict[str, Any] = {
        "name": f"ftcalc-{spec.method}-{spec.model.base_model.split('/')[-1]}".lower().replace("_", "-"),
        "resources": resources,
        "num_nodes": hw.num_nodes,
        "workdir": ".",
    }
    if hw.num_nodes > 1:
        task["envs"] = {"MASTER_PORT": "29500"}  # the head node's rendezvous port (sky launch --env MASTER_PORT=...)
    if file_mounts:
        task["file_mounts"] = file_mounts
    task["setup"] = setup
    task["run"] = f"set -e\nftcalc run {shlex.quote(spec_name)} --output-dir {shlex.quote(out)} --resume\n"
    p = spec.predicted
    planned = ""
    if does_not_fit:
        planned = (f"# WARNING: the estimator predicts this plan does NOT fit ({does_not_fit}); written anyway "
                   "because of --force.\n")
    elif p.provider:
        planned = (f"# Planned on {p.provider} {p.instance_type or ''}: "
                   f"{p.hours or 0:.2f} h, ${p.cost_usd or 0:,.2f}.\n")
    keep = ("# Checkpoints go to the bucket mounted at " + out.rsplit("/", 1)[0] + ": a recovered spot job resumes.\n"
            if file_mounts and any(out.startswith(k + "/") for k in file_mounts) else
            f"# Checkpoints stay in '{out}' on {'node 0' if hw.num_nodes > 1 else 'the node'}'s disk (ftcalc plan "
            "--checkpoint-url puts them in a bucket).\n")
    head = (f"# SkyPilot task for this ftcalc spec, written by ftcalc plan --emit skypilot.\n{planned}"
            f"#   sky launch -c ftcalc THIS_FILE        (or: sky jobs launch THIS_FILE for managed spot)\n"
            f"# The workdir (this folder: {spec_name}, its data, ftcalc's wheel in {WHEEL_DIR}/) is synced to every "
            f"node.\n{keep}")
    return head + yaml.dump(task, Dumper=BlockDumper, sort_keys=False, width=110)
