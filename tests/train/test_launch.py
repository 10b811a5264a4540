"""`ftcalc plan --emit skypilot|accelerate`: what the emitted files ask of a node, and a two-node rehearsal.

The rehearsal plays the SkyPilot task the way SkyPilot runs it (docs.skypilot.co, running-jobs/distributed-jobs):
the workdir synced to each node's own folder, ``setup`` then ``run`` verbatim with bash in it, and SkyPilot's
variables set per node. Each "node" is a fresh venv in a temp folder whose only premise is the node image's
torch (2.13.0 CPU, from this machine's wheel store); everything else comes from ``setup``.

SkyPilot itself is not a test dependency: skypilot 0.14.1 requires click<8.2.0 and huggingface-hub 2.5 (which
transformers installs) click>=8.4.2, so `pip check` fails with both installed. Emitted tasks are therefore
checked against its task schema, dumped from that release (tests/data/skypilot-0.14.1-task-schema.json), and
with ``sky.Task.from_yaml`` where SkyPilot is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from ftcalc.cli.main import main as cli
from ftcalc.errors import InvalidArgumentError
from ftcalc.train.launch import (
    CHECKPOINT_MOUNT,
    DATA_MOUNT,
    accelerate_launch_line,
    prepare_workdir,
    validated_versions,
)
from ftcalc.train.runner import node_rendezvous
from ftcalc.train.spec import HardwareSection, load_spec

ROOT = Path(__file__).resolve().parents[2]
ALPACA = ROOT / "data" / "samples" / "alpaca_sample.jsonl"
SCHEMA = json.loads((ROOT / "tests" / "data" / "skypilot-0.14.1-task-schema.json").read_text())


def _plan(folder: Path, *args: str, model: str = "tiny-llama", dataset: Path = ALPACA) -> int:
    return cli(["plan", "--model", model, "--dataset", str(dataset), "-o", str(folder / "spec.yaml"), *args])


def _node_paths_exist(folder: Path) -> None:
    """Every path the emitted files name is in the workdir (relative) or under a file mount of the task."""
    task = yaml.safe_load((folder / "sky.yaml").read_text())
    mounts = list(task.get("file_mounts") or {})
    spec = load_spec(folder / "spec.yaml")

    def on_node(p: str, what: str) -> None:
        if os.path.isabs(p):
            assert any(p == m or p.startswith(m + "/") for m in mounts), f"{what} {p} is on no mount {mounts}"
        else:
            assert (folder / p).exists(), f"{what} {p} is not in the workdir"

    on_node(spec.data.path, "data.path")
    for key in ("base_model", "tokenizer"):
        val = getattr(spec.model, key)
        if val and ("/" not in val or val.startswith((".", "/"))) and (folder / val).exists():
            on_node(val, f"model.{key}")
    for word in task["setup"].split():
        if ".whl" in word:
            on_node(word.strip("'").removesuffix("[train]"), "wheel")
    run = task["run"].split()
    on_node(run[run.index("run") + 1], "spec")
    out = run[run.index("--output-dir") + 1]
    if os.path.isabs(out):
        on_node(out, "output_dir")
    acc = folder / "accelerate_config.yaml"
    if acc.exists():
        line = accelerate_launch_line(spec, "spec.yaml", output_dir=out)
        assert line in acc.read_text()
        for name in ("accelerate_config.yaml", "spec.yaml"):
            on_node(name, "accelerate")


def _validate_task(path: Path) -> dict:
    """The task against SkyPilot 0.14.1's task schema (vendored), and sky.Task.from_yaml where SkyPilot is installed."""
    import jsonschema

    task = yaml.safe_load(path.read_text())
    jsonschema.validate(task, SCHEMA["schema"])
    try:
        import sky
    except ImportError:
        return task
    t = sky.Task.from_yaml(str(path))
    assert t.num_nodes == task["num_nodes"]
    return task


# --------------------------------------------------------------------------- what the emitted files ask of a node


def test_outside_dataset_is_copied_and_every_named_path_exists_on_the_node(tmp_path, capsys):
    folder = tmp_path / "job"
    assert _plan(folder, "--method", "lora", "--gpu", "h100", "--num-gpus", "2", "--num-nodes", "2",
                 "--max-steps", "4", "--emit", "skypilot", "--emit", "accelerate") == 0
    err = capsys.readouterr().err
    assert "copied the dataset" in err and "stay on node 0's disk" in err
    spec = load_spec(folder / "spec.yaml")
    assert not os.path.isabs(spec.data.path)
    assert (folder / spec.data.path).read_bytes() == ALPACA.read_bytes()
    task = _validate_task(folder / "sky.yaml")
    assert task["num_nodes"] == 2 and task["resources"]["accelerators"] == "H100:2"
    assert len(list((folder / "ftcalc_dist").glob("ftcalc-*.whl"))) == 1
    _node_paths_exist(folder)
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(folder / "accelerate_config.yaml"))
    assert cfg.num_machines == 2 and cfg.num_processes == 4


def test_dataset_inside_the_workdir_stays_relative_and_is_not_copied(tmp_path):
    folder = tmp_path / "job"
    (folder / "d").mkdir(parents=True)
    shutil.copy(ALPACA, folder / "d" / "train.jsonl")
    assert _plan(folder, "--gpu", "h100", "--max-steps", "2", "--emit", "skypilot",
                 dataset=folder / "d" / "train.jsonl") == 0
    assert load_spec(folder / "spec.yaml").data.path == "d/train.jsonl"
    assert not (folder / "ftcalc_data").exists()
    _validate_task(folder / "sky.yaml")
    _node_paths_exist(folder)


def test_bucket_urls_become_file_mounts(tmp_path):
    folder = tmp_path / "job"
    assert _plan(folder, "--gpu", "h200", "--num-gpus", "8", "--max-steps", "2", "--emit", "skypilot",
                 "--data-url", "s3://my-bucket/datasets/", "--checkpoint-url", "gs://ckpts/job1") == 0
    task = _validate_task(folder / "sky.yaml")
    assert task["file_mounts"] == {DATA_MOUNT: {"source": "s3://my-bucket/datasets", "mode": "COPY"},
                                   CHECKPOINT_MOUNT: {"source": "gs://ckpts/job1", "mode": "MOUNT"}}
    assert load_spec(folder / "spec.yaml").data.path == f"{DATA_MOUNT}/{ALPACA.name}"
    assert f"--output-dir {CHECKPOINT_MOUNT}/run --resume" in task["run"]
    assert not (folder / "ftcalc_data").exists()
    _node_paths_exist(folder)
    import jsonschema  # the vendored schema refuses what SkyPilot refuses: an unknown key, a count that is no count

    for bad in ({**task, "colour": 1}, {**task, "num_nodes": "two"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA["schema"])


def test_copy_limit_and_outside_model_folders_are_refused(tmp_path):
    spec_dir = tmp_path / "job"
    spec_dir.mkdir()
    assert _plan(spec_dir, "--device", "cpu", "--max-steps", "2") == 0
    spec = load_spec(spec_dir / "spec.yaml")  # the dataset path is absolute: outside the folder
    with pytest.raises(InvalidArgumentError, match="over the 0 MiB copy limit.*--data-url"):
        prepare_workdir(spec, spec_dir, copy_limit_bytes=100)
    outside = tmp_path / "tok"
    shutil.copytree(ROOT / "data" / "tokenizers" / "tiny-llama", outside)
    with pytest.raises(InvalidArgumentError, match="model.tokenizer .* outside the task's workdir"):
        prepare_workdir(spec.model_copy(update={"model": spec.model.model_copy(update={"tokenizer": str(outside)})}),
                        spec_dir)


def test_a_plan_that_does_not_fit_gets_no_task_unless_forced(tmp_path, capsys):
    folder = tmp_path / "job"
    args = ("--method", "full", "--gpu", "h100", "--num-gpus", "8", "--max-steps", "2", "--init", "random",
            "--emit", "skypilot")
    assert _plan(folder, *args, model="70b") == 2
    err = capsys.readouterr().err
    assert "does NOT fit" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert not (folder / "sky.yaml").exists() and not (folder / "spec.yaml").exists()
    assert _plan(folder, *args, "--force", model="70b") == 0
    head = (folder / "sky.yaml").read_text().split("\nname:")[0]
    assert "does NOT fit" in head and "--force" in head and "Planned on" not in head
    _validate_task(folder / "sky.yaml")


def test_emit_options_need_their_context(tmp_path, capsys):
    assert _plan(tmp_path, "--gpu", "h100", "--data-url", "s3://b/d") == 2
    assert "add --emit skypilot" in capsys.readouterr().err
    assert cli(["plan", "--model", "tiny-llama", "--dataset", str(ALPACA), "--gpu", "h100", "--emit", "skypilot"]) == 2
    assert "pass -o" in capsys.readouterr().err


def test_pinned_versions_are_those_most_measurements_were_taken_with():
    rows = []
    for f in (ROOT / "data" / "measurements").glob("runs-*.jsonl"):
        rows += [json.loads(x).get("versions") or {} for x in f.read_text().splitlines() if x.strip()]
    pins = validated_versions()
    assert set(pins) == {"torch", "transformers", "peft", "accelerate", "bitsandbytes"}
    agree = sum(all(str(r.get(k, "")).split("+")[0] == v for k, v in pins.items()) for r in rows)
    assert agree > len(rows) / 2, (pins, Counter(json.dumps(r, sort_keys=True) for r in rows).most_common(2))


def test_node_rendezvous_from_skypilot_variables():
    two = HardwareSection(num_gpus=8, num_nodes=2, device="cuda", gpu="h100")
    env = {"SKYPILOT_NODE_IPS": "10.0.0.5\n10.0.0.6\n", "SKYPILOT_NUM_NODES": "2", "SKYPILOT_NODE_RANK": "1",
           "SKYPILOT_NUM_GPUS_PER_NODE": "8"}
    args, rank = node_rendezvous(two, env)
    assert rank == 1
    assert args == ["--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.5", "--master_port=29500"]
    assert node_rendezvous(two, {**env, "MASTER_PORT": "1234"})[0][-1] == "--master_port=1234"
    assert node_rendezvous(HardwareSection(num_gpus=8), {})[0] == ["--standalone", "--nnodes=1"]
    with pytest.raises(InvalidArgumentError, match="SKYPILOT_NODE_IPS and SKYPILOT_NODE_RANK is not set"):
        node_rendezvous(two, {})
    with pytest.raises(InvalidArgumentError, match="num_nodes is 2 but SkyPilot started 3"):
        node_rendezvous(two, {**env, "SKYPILOT_NUM_NODES": "3", "SKYPILOT_NODE_IPS": "a\nb\nc"})
    with pytest.raises(InvalidArgumentError, match="SKYPILOT_NUM_GPUS_PER_NODE is 4"):
        node_rendezvous(two, {**env, "SKYPILOT_NUM_GPUS_PER_NODE": "4"})
    cpu = HardwareSection(num_gpus=1, num_nodes=2, device="cpu")  # processes per node come from the spec
    assert node_rendezvous(cpu, {**env, "SKYPILOT_NUM_GPUS_PER_NODE": "0"})[1] == 1


# --------------------------------------------------------------------------- the rehearsal


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_env(venv: Path) -> dict[str, str]:
    """A shell on the node: its venv first on PATH (as an activated one), nothing of this checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "FTCALC_", "SKYPILOT_"))}
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", VIRTUAL_ENV=str(venv), PIP_NO_INPUT="1",
               PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    return env


def _both_nodes(script: str, nodes: list[tuple[Path, Path]], extra: dict[str, str], log: Path) -> None:
    """``script`` with bash in every node's workdir at once, SkyPilot's variables set; all must exit 0."""
    procs = []
    for rank, (venv, work) in enumerate(nodes):
        env = {**_node_env(venv), **extra, "SKYPILOT_NODE_RANK": str(rank)}
        out = open(log.with_suffix(f".{rank}.log"), "w")
        procs.append((subprocess.Popen(["bash", "-c", script], cwd=work, env=env, stdout=out,
                                       stderr=subprocess.STDOUT), out))
    for p, out in procs:
        try:
            p.wait(timeout=480)
        finally:
            p.kill() if p.poll() is None else None
            out.close()
    for rank, (p, _) in enumerate(procs):
        text = log.with_suffix(f".{rank}.log").read_text()
        assert p.returncode == 0, f"node {rank} exited {p.returncode}:\n{text[-3000:]}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The planned task and two fresh nodes with its setup run: [(venv, workdir)], the planned folder."""
    tmp = tmp_path_factory.mktemp("cluster")
    src = tmp / "planned"
    # lora with dropout 0: two DDP ranks of one sequence each train exactly like one process accumulating two
    assert _plan(src, "--method", "lora", "--lora-dropout", "0", "--device", "cpu", "--num-nodes", "2",
                 "--max-steps", "3", "--emit", "skypilot", "--emit", "accelerate") == 0
    task = yaml.safe_load((src / "sky.yaml").read_text())
    nodes = [(tmp / f"venv{rank}", tmp / f"node{rank}") for rank in range(2)]
    # each node image: a venv with torch 2.13.0 CPU (pip reads it from this machine's wheel store), both at once
    images = [subprocess.Popen(["bash", "-c", f"{sys.executable} -m venv {venv} && {venv}/bin/python -m pip install -q "
                                "torch==2.13.0"], env=_node_env(venv), stdout=subprocess.DEVNULL) for venv, _ in nodes]
    assert [p.wait(timeout=480) for p in images] == [0, 0]
    for _, work in nodes:
        shutil.copytree(src, work)  # SkyPilot's workdir sync
    _both_nodes(task["setup"], nodes, {}, tmp / "setup")
    return nodes, src, task, tmp


def _skypilot_env(port: int) -> dict[str, str]:
    return {"SKYPILOT_NODE_IPS": "127.0.0.1\n127.0.0.1", "SKYPILOT_NUM_NODES": "2", "SKYPILOT_NUM_GPUS_PER_NODE": "1",
            "MASTER_PORT": str(port)}


def _one_process_loss(venv: Path, src: Path, tmp: Path) -> float:
    """The same spec in one process: micro-batch 1, accumulation 2 (= 2 ranks x micro-batch 1), on node 0's venv."""
    one = tmp / "one"
    if not (one / "run" / "run_report.json").exists():
        shutil.copytree(src, one, dirs_exist_ok=True)
        raw = yaml.safe_load((one / "spec.yaml").read_text())
        raw["hardware"]["num_nodes"] = 1
        raw["distribution"]["strategy"] = "single"
        raw["gradient_accumulation_steps"] = 2
        (one / "spec.yaml").write_text(yaml.safe_dump(raw))
        subprocess.run(["ftcalc", "run", "spec.yaml", "--output-dir", "run"], cwd=one, env=_node_env(venv),
                       check=True, capture_output=True)
    report = json.loads((one / "run" / "run_report.json").read_text())
    assert report["status"] == "completed" and report["world_size"] == 1
    return report["measured"]["train_loss"]


@pytest.mark.slow
def test_rehearsal_nodes_run_the_wheel_not_this_checkout(cluster):
    nodes, src, task, tmp = cluster
    for venv, work in nodes:
        code = "import ftcalc, transformers, peft, accelerate; print(ftcalc.__file__, transformers.__version__, " \
               "peft.__version__, accelerate.__version__)"
        out = subprocess.run(["python", "-c", code], cwd=work, env=_node_env(venv), capture_output=True, text=True,
                             check=True).stdout.split()
        assert Path(out[0]).is_relative_to(venv), out
        pins = validated_versions()
        assert out[1:] == [pins["transformers"], pins["peft"], pins["accelerate"]]
    # an installed (not editable) ftcalc repacks itself into the same wheel for the next task it plans
    venv, work = nodes[0]
    code = "from pathlib import Path; from ftcalc.train.launch import build_wheel; print(build_wheel(Path('rewheel')))"
    rewheel = subprocess.run(["python", "-c", code], cwd=tmp, env=_node_env(venv), capture_output=True, text=True,
                             check=True).stdout.strip()
    import zipfile

    original = next((src / "ftcalc_dist").glob("*.whl"))
    names = {n for n in zipfile.ZipFile(original).namelist() if not n.endswith("RECORD")}
    assert {n for n in zipfile.ZipFile(tmp / rewheel).namelist() if not n.endswith("RECORD")} == names


@pytest.mark.slow
def test_rehearsal_two_nodes_run_the_task_verbatim(cluster):
    nodes, src, task, tmp = cluster
    _both_nodes(task["run"], nodes, _skypilot_env(_free_port()), tmp / "run")
    report = json.loads((nodes[0][1] / "run" / "run_report.json").read_text())
    assert report["status"] == "completed" and report["world_size"] == 2
    assert report["measured"]["final_step"] == 3
    one = _one_process_loss(nodes[0][0], src, tmp)
    assert report["measured"]["train_loss"] == pytest.approx(one, rel=1e-5)


@pytest.mark.slow
def test_rehearsal_two_nodes_accelerate_launch(cluster):
    nodes, src, task, tmp = cluster
    spec = load_spec(src / "spec.yaml")
    line = accelerate_launch_line(spec, "spec.yaml", output_dir="run")
    assert line in (src / "accelerate_config.yaml").read_text()  # the command its header gives
    fresh = []
    for rank, (venv, _) in enumerate(nodes):
        work = tmp / f"acc-node{rank}"
        shutil.copytree(src, work)
        fresh.append((venv, work))
    _both_nodes(line, fresh, _skypilot_env(_free_port()), tmp / "acc")
    report = json.loads((fresh[0][1] / "run" / "run_report.json").read_text())
    assert report["status"] == "completed" and report["world_size"] == 2
    assert report["measured"]["train_loss"] == pytest.approx(_one_process_loss(nodes[0][0], src, tmp), rel=1e-5)


def test_a_plan_over_several_nodes_is_costed_per_gpu_over_the_whole_world(tmp_path, capsys):
    """70B full fine-tuning, FSDP, 2 nodes x 8 H200: the per-GPU memory is that of 16-way sharding (below one
    node's 8-way), where the one-node estimator would refuse 16 GPUs of one node or give the unsharded model."""
    from ftcalc.train.spec import load_spec

    def planned(nodes: int) -> float:
        out = tmp_path / f"spec{nodes}.yaml"
        assert cli(["plan", "--model", "70b", "--method", "full", "--dataset", str(ALPACA), "--gpu", "h200",
                    "--num-gpus", "8", "--num-nodes", str(nodes), "--distribution", "fsdp", "-o", str(out)]) == 0
        return load_spec(out).predicted.device_used_bytes

    one, two = planned(1), planned(2)
    err = capsys.readouterr().err
    assert two < one < 141e9 and "does NOT fit" not in err, (one, two)
