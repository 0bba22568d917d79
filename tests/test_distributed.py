"""Multi-process runs give the 1-process answer: global batch, exact DDP evaluation, cluster defaults.

DDP runs use two CPU processes (gloo) started by torchrun, as the README's recipe does; data and
model are tiny so they take seconds. GPU-only checks are skipped without a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

import src.data.base as data_base
from src.cli import main
from src.cli_support import cpu_precision
from src.data import BatchSizeError, CIFARDataModule
from src.data.base import cpus_per_process, default_num_workers, split_global_batch
from src.data.locking import LOCK_NAME
from src.modules import ImageClassifier
from tests.conftest import REPO_ROOT
from tests.helpers import tiny_data

QUICKSTART = str(REPO_ROOT / "configs" / "quickstart.yaml")
RESNET20 = str(REPO_ROOT / "configs" / "cifar10" / "resnet20.yaml")
PRESETS = REPO_ROOT / "configs" / "trainer"
# 128 training samples at a global batch of 64: 2 optimizer steps; odd val and test sizes.
TINY = [
    "--model.arch", "resnet8",
    "--trainer.max_epochs", "1",
    "--model.lr_scheduler.init_args.warmup_steps", "0",  # the quickstart warms up for 30 steps; these runs are shorter
    "--data", "SyntheticDataModule",
    "--data.image_size", "16",
    "--data.train_size", "128",
    "--data.val_size", "63",
    "--data.test_size", "65",
    "--data.batch_size", "64",
    "--trainer.accelerator", "cpu",
]  # fmt: skip
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def run_cli(*args: str, cwd: Path, processes: int = 1) -> subprocess.CompletedProcess:
    """``python -m src.cli ...``; with ``processes > 1`` through torchrun, as the README's recipe."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] if processes > 1 else []
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, *launcher, "-m", "src.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def report(run_dir: Path) -> dict:
    return json.loads((run_dir / "efficiency.json").read_text())


# ---------------------------------------------------------------- global batch
def ddp_trainer(devices: int, tmp_path) -> pl.Trainer:
    """A 2-or-more-process trainer, never launched: it only answers world_size / rank questions."""
    return pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp", logger=False, default_root_dir=tmp_path)


def test_global_batch_is_split_among_processes(tmp_path):
    data = tiny_data(batch_size=256, train_size=600)
    data.trainer = ddp_trainer(2, tmp_path)
    data.setup("fit")
    assert data.per_process_batch_size == 128
    assert data.train_dataloader().batch_size == 128 and data.val_dataloader().batch_size == 128
    assert tiny_data(batch_size=256).per_process_batch_size == 256  # no trainer: one process


def test_indivisible_global_batch_is_a_clear_error(tmp_path):
    data = tiny_data(batch_size=255)
    data.trainer = ddp_trainer(2, tmp_path)
    data.setup("fit")
    with pytest.raises(BatchSizeError, match=r"batch_size 255 .* 2 processes .* multiple of 2, e\.g\. 254, 256"):
        data.train_dataloader()
    with pytest.raises(BatchSizeError, match="e.g. 4$"):
        split_global_batch(2, 4)


def test_evaluation_loader_never_pads(tmp_path):
    data = tiny_data(val_size=65, test_size=3)
    data.trainer = ddp_trainer(2, tmp_path)
    data.setup()
    sampler = data.val_dataloader().sampler
    # Lightning keeps a DistributedSampler it is given instead of putting in its padded one.
    assert isinstance(sampler, UnrepeatedDistributedSampler) and len(sampler) == 33  # rank 0 of 2: 33 + 32 = 65
    assert data.train_dataloader().sampler.__class__.__name__ == "RandomSampler"  # Lightning shards it at fit
    data.trainer = ddp_trainer(4, tmp_path)
    with pytest.raises(ValueError, match="3 samples cannot be spread over 4 processes"):
        data.test_dataloader()


@pytest.mark.slow
def test_ddp_fit_and_test_score_every_sample_once_and_match_one_process(tmp_path):
    """2 processes: 63 val and 65 test samples each counted once; accuracies equal to a 1-process evaluation."""
    fit = run_cli("fit", "--config", QUICKSTART, *TINY, "--trainer.devices", "2", "--trainer.strategy", "ddp",
                  cwd=tmp_path, processes=2)  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    runs = tmp_path / "lightning_logs" / "quickstart"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]
    ddp = report(runs / "version_0")
    assert (ddp["world_size"], ddp["per_process_batch_size"], ddp["global_batch_size"]) == (2, 32, 64)
    assert ddp["global_step"] == 2  # 128 samples / global batch 64, as on one process
    assert ddp["train_images_seen"] == 128  # both processes' shards
    assert ddp["val_samples"] == 63 and ddp["test_samples"] == 65  # Lightning's padded sampler scores 64 and 66
    checkpoint = str(runs / "version_0" / "checkpoints" / "last.ckpt")  # one epoch: last == best

    # Evaluations of a run's checkpoint are recorded in that run (evaluations/), on one process here.
    evaluations = runs / "version_0" / "evaluations"
    test = run_cli("test", "--config", QUICKSTART, *TINY, "--ckpt_path", checkpoint, cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    single = json.loads((evaluations / "test.json").read_text())
    assert (single["world_size"], single["test_samples"]) == (1, 65)
    assert single["test_acc"] == ddp["test_acc"]

    validate = run_cli("validate", "--config", QUICKSTART, *TINY, "--ckpt_path", checkpoint, cwd=tmp_path)
    assert validate.returncode == 0, validate.stderr[-3000:]
    validated = json.loads((evaluations / "validate.json").read_text())
    assert (validated["last_val_acc"], validated["val_samples"]) == (ddp["last_val_acc"], 63)
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]  # no new run directory for either


# ---------------------------------------------------------------- presets
def fit_in_process(tmp_path, monkeypatch, *args: str) -> Path:
    """Run ``fit`` in this process (fast: no interpreter start); return the run directory."""
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", QUICKSTART, *TINY, "--test_after_fit", "false", *args])
    return tmp_path / "lightning_logs" / "quickstart" / "version_0"


def test_bf16_preset_fits_on_cpu_and_prints_progress_lines(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cpu_precision, "bf16_is_emulated", lambda: True)  # as on an AVX2-only CPU
    with pytest.warns(UserWarning, match=r"trainer.precision bf16-mixed on a CPU without bf16 kernels .* 32-true"):
        run_dir = fit_in_process(tmp_path, monkeypatch, "--config", str(PRESETS / "bf16.yaml"))
    result = report(run_dir)
    assert result["precision"] == "bf16-mixed" and result["global_step"] == 2
    assert 0.0 <= result["last_val_acc"] <= 1.0
    # stdout is captured (not a terminal): plain progress lines instead of a live bar.
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("[train epoch end] epoch 0 step 2/2 (100.0%)") for line in lines), lines
    assert any(line.startswith("[val] epoch 0 step 2 ") and "val/acc=" in line for line in lines), lines


def test_compile_preset_checkpoint_loads_into_an_uncompiled_model(tmp_path, monkeypatch):
    preset = yaml.safe_load((PRESETS / "compile.yaml").read_text())
    preset["trainer"]["callbacks+"][0]["init_args"]["backend"] = "eager"  # same wrapping, no code generation
    overlay = tmp_path / "compile_eager.yaml"
    overlay.write_text(yaml.safe_dump(preset))
    run_dir = fit_in_process(tmp_path, monkeypatch, "--config", str(overlay))
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    plain = ImageClassifier("resnet8", num_classes=10)
    assert set(checkpoint["state_dict"]) == set(plain.state_dict())  # no "_orig_mod." anywhere
    loaded = ImageClassifier.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu")
    assert getattr(loaded.model, "_compiled_call_impl", None) is None
    torch.testing.assert_close(loaded.model.fc.weight, checkpoint["state_dict"]["model.fc.weight"])


@pytest.mark.parametrize("preset", sorted(p.name for p in PRESETS.glob("*.yaml")))
def test_every_preset_stacks_on_an_experiment_config(preset, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", RESNET20, "--config", str(PRESETS / preset), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["arch"] == "resnet20" and printed["trainer"]["max_steps"] == 64_000  # the experiment
    assert printed["data"]["init_args"]["batch_size"] == 128  # the paper's batch, global
    sections = yaml.safe_load((PRESETS / preset).read_text())
    for key, value in sections.get("trainer", {}).items():
        if isinstance(value, list):  # callbacks / plugins: the class paths, in order
            assert [item["class_path"] for item in printed["trainer"][key.rstrip("+")]] == [
                item["class_path"] for item in value
            ]
        else:
            assert printed["trainer"][key] == value, key
    for key, value in sections.get("model", {}).items():  # cuda_graphs.yaml: model.captured_step
        assert printed["model"][key] == value, key


@needs_gpu
def test_fp16_preset_uses_a_gradient_scaler_on_gpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", QUICKSTART, *TINY, "--test_after_fit", "false", "--config", str(PRESETS / "fp16.yaml")]
    cli = main([*args, "--trainer.accelerator", "gpu", "--trainer.devices", "1"])
    assert type(cli.trainer.precision_plugin.scaler).__name__ == "GradScaler"
    result = report(tmp_path / "lightning_logs" / "quickstart" / "version_0")
    assert result["peak_memory_kind"] == "cuda_max_allocated_excluding_data" and result["peak_memory_mb"] > 0


@needs_gpu
def test_compile_preset_with_inductor_on_gpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", QUICKSTART, *TINY, "--test_after_fit", "false"]
    main([*args, "--config", str(PRESETS / "compile.yaml"), "--trainer.accelerator", "gpu", "--trainer.devices", "1"])
    checkpoint = tmp_path / "lightning_logs" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    loaded = ImageClassifier.load_from_checkpoint(checkpoint, map_location="cpu")
    assert loaded(torch.randn(2, 3, 16, 16)).shape == (2, 10)


@needs_gpu
@pytest.mark.parametrize("preset", ["bf16.yaml", "ddp.yaml"])
def test_the_bf16_and_ddp_presets_train_on_a_gpu_and_the_checkpoint_loads_on_a_cpu(tmp_path, monkeypatch, preset):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", QUICKSTART, *TINY, "--test_after_fit", "false", "--config", str(PRESETS / preset)]
    main([*args, "--trainer.accelerator", "gpu", "--trainer.devices", "1"])
    run_dir = tmp_path / "lightning_logs" / "quickstart" / "version_0"
    result = report(run_dir)
    assert result["global_step"] == 2 and result["peak_memory_kind"] == "cuda_max_allocated_excluding_data"
    loaded = ImageClassifier.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu")
    assert loaded(torch.randn(2, 3, 16, 16)).shape == (2, 10)


# ---------------------------------------------------------------- cluster defaults
def test_workers_come_from_this_process_share_of_the_cpus(monkeypatch):
    monkeypatch.setattr(data_base, "available_cpus", lambda: 16)
    for name in ("SLURM_CPUS_PER_TASK", "SLURM_LOCALID", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert cpus_per_process() == 16 and default_num_workers() == 4  # capped at 4
    assert cpus_per_process(local_processes=8) == 2 and default_num_workers(local_processes=8) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")  # torchrun: 16 processes share the node
    assert cpus_per_process() == 1 and default_num_workers() == 0
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")  # srun: SLURM says each task's share
    monkeypatch.setenv("SLURM_LOCALID", "0")
    assert cpus_per_process() == 3 and default_num_workers() == 2


def test_available_cpus_respects_affinity():
    assert 1 <= data_base.available_cpus() <= len(os.sched_getaffinity(0))


def test_auto_workers_are_shared_among_the_processes_on_a_node(tmp_path, monkeypatch):
    monkeypatch.setattr(data_base, "available_cpus", lambda: 9)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_LOCALID", raising=False)
    data = CIFARDataModule(data_dir=str(tmp_path), download=False, num_workers=None)
    assert data.num_workers == 4
    data.trainer = ddp_trainer(3, tmp_path)
    assert data._workers() == 2  # 9 CPUs / 3 processes, one left to the training process


LOCK_HELD = """
import fcntl, sys
with open(sys.argv[1], "a+") as handle:
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print("held")
    else:
        print("free")
"""


def lock_state(path: Path) -> str:
    return subprocess.run([sys.executable, "-c", LOCK_HELD, str(path)], capture_output=True, text=True).stdout.strip()


def test_cifar_download_holds_the_lock_so_nodes_take_turns(fake_cifar, monkeypatch):
    root = fake_cifar("cifar10", train_per_file=10, test_size=10)
    lock = root / LOCK_NAME
    seen = []
    data = CIFARDataModule(data_dir=str(root), download=True, num_workers=0)
    original_open = data._open

    def observing_open(*args, **kwargs):
        seen.append(lock_state(lock))  # what another process (another node) finds meanwhile
        return original_open(*args, **kwargs)

    monkeypatch.setattr(data, "_open", observing_open)
    data.prepare_data()
    assert seen == ["held", "held"]  # train and test files, both under the lock
    assert lock_state(lock) == "free"


def test_file_lock_waits_for_the_holder_and_can_time_out(tmp_path):
    from src.data.locking import file_lock

    lock = tmp_path / "sub" / "x.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time\nh = open(sys.argv[1], 'a+')\n"
         "fcntl.lockf(h, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(1.5)", str(lock)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    lock.parent.mkdir(parents=True, exist_ok=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(TimeoutError, match="held the lock"):
        with file_lock(lock, timeout=0.2, poll_s=0.05):
            pass
    start = time.monotonic()
    with file_lock(lock, poll_s=0.05):  # waits until the holder lets go (about 1.3 s more)
        waited = time.monotonic() - start
    assert waited > 0.8
    holder.wait()


# ---------------------------------------------------------------- SLURM
def render(*argv: str) -> str:
    from scripts.slurm.render import render as render_script

    return render_script(list(argv))


def test_slurm_script_for_m_nodes_by_n_gpus(tmp_path):
    text = render(
        "--nodes", "3", "--gpus-per-node", "8", "--time", "1-00:00:00", "--name", "r56",
        "--config", "configs/cifar10/resnet20.yaml", "--partition", "gpu", "--", "--model.arch", "resnet56",
    )  # fmt: skip
    sbatch = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert sbatch == [
        "#SBATCH --job-name=r56",
        "#SBATCH --nodes=3",
        "#SBATCH --ntasks-per-node=8",  # one process per GPU: Lightning's SLURM contract
        "#SBATCH --gres=gpu:8",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --time=1-00:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --signal=SIGUSR1@90",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        "#SBATCH --output=slurm-%x-%j.out",
    ]
    # Run it with a stand-in srun that prints the command it would launch on every task.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\necho "srun $*"\n')
    (bin_dir / "srun").chmod(0o755)
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NNODES": "3", "SLURM_NTASKS_PER_NODE": "8", "SLURM_CPUS_PER_TASK": "8",
             "SLURM_SUBMIT_DIR": str(tmp_path)}  # fmt: skip
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", **slurm}
    launched = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout
    assert launched.strip() == (
        "srun --cpus-per-task=8 python -m src.cli fit --config configs/cifar10/resnet20.yaml "
        "--config configs/trainer/slurm.yaml "
        "--trainer.num_nodes 3 --trainer.devices 8 --run_dir lightning_logs/r56/job-4242 --model.arch resnet56"
    )
    array = {**env, "SLURM_ARRAY_JOB_ID": "4000", "SLURM_ARRAY_TASK_ID": "7"}  # one directory per array task
    launched = subprocess.run(["bash", str(script)], env=array, capture_output=True, text=True, check=True).stdout
    assert "--run_dir lightning_logs/r56/job-4000-7 " in launched


def test_shipped_slurm_scripts_are_the_rendered_template():
    from scripts.slurm.render import HERE, SHIPPED
    from scripts.slurm.render import render as render_script

    for name, argv in SHIPPED.items():
        assert (HERE / name).read_text() == render_script(argv, f"scripts/slurm/{name}"), f"re-render {name}"
    assert "#SBATCH --nodes=1\n" in (HERE / "1node.sbatch").read_text()
    assert "#SBATCH --nodes=2\n" in (HERE / "multinode.sbatch").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--nodes", "0"], "--nodes must be >= 1, got 0"),
        (["--time", "90 minutes"], "is not a SLURM time"),
        (["--name", "a/b"], "it names a directory"),
    ],
)
def test_slurm_render_rejects_bad_input(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        render(*argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
