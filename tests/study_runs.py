"""Tiny real runs laid out as a study, made once per test session for the sweep and report tests.

``<root>/study/<arch>/seed<k>/`` as the sweep lays runs out, made with today's CLI by fixing the
TensorBoard logger's directory (save_dir / name / version):

* resnet8 and plain8, seeds 0 and 1: finished (trained 2 epochs of 2 steps, then tested);
* resnet14, seed 0 only: finished (a one-seed variant, and the next depth of resnet8's line);
* plain14, seed 0: trained but never tested (as a crashed run leaves it): unfinished.

``write_run`` writes a run directory without training (config.yaml and efficiency.json with
chosen accuracies), for checks against hand-computed statistics.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from src.cli import main
from tests.conftest import REPO_ROOT

STUDY = "study"
FINISHED = [("resnet8", 0), ("resnet8", 1), ("plain8", 0), ("plain8", 1), ("resnet14", 0)]
UNTESTED = [("plain14", 0)]
# Shrinks the quickstart to seconds: 16x16 images, a few hundred samples, 2 epochs of 2 steps.
TINY = [
    "--trainer.max_epochs", "2",
    "--model.lr_scheduler.init_args.warmup_steps", "0",  # the quickstart's 30-step warmup is longer than 4 steps
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--data.image_size", "16",
    "--data.train_size", "128",
    "--data.val_size", "64",
    "--data.test_size", "64",
    "--data.batch_size", "64",
    "--data.num_workers", "0",
]  # fmt: skip
QUICKSTART = str(REPO_ROOT / "configs" / "quickstart.yaml")


def fit(root: Path, arch: str, seed: int, test: bool = True) -> Path:
    run_dir = root / STUDY / arch / f"seed{seed}"
    args = ["fit", "--config", QUICKSTART, "--run_dir", str(run_dir), "--model.arch", arch]
    args += ["--seed_everything", str(seed), *TINY, "--test_after_fit", "true" if test else "false"]
    main(args)
    return run_dir


def make_study(root: Path) -> Path:
    """Write the runs listed in the module docstring under ``root``; return ``root / STUDY``."""
    for arch, seed in FINISHED:
        fit(root, arch, seed)
    for arch, seed in UNTESTED:
        fit(root, arch, seed, test=False)
    return root / STUDY


# ------------------------------------------------------------------------------------------------ written runs
# Run directories written directly (config.yaml + efficiency.json, no training): known accuracies for exact checks.


def resolved_config(arch: str, seed: int, run_dir: Path, **overrides: object) -> dict:
    """A resolved config as the CLI saves it (the fields the report reads), with dotted-key ``overrides``."""
    config = {
        "seed_everything": seed,
        "trainer": {
            "max_steps": 64000,
            "max_epochs": None,
            "precision": None,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(run_dir.parent), "name": "default", "version": None},
            },
            "default_root_dir": str(run_dir.parent),
        },  # fmt: skip
        "model": {
            "arch": arch,
            "shortcut": None if arch.startswith("plain") else "A",
            "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "weight_decay": 0.0001}},
            "lr_scheduler": {
                "class_path": "torch.optim.lr_scheduler.MultiStepLR",
                "init_args": {"milestones": [32000, 48000], "gamma": 0.1},
            },
        },
        "data": {
            "class_path": "src.data.CIFARDataModule",
            "init_args": {"dataset": "cifar10", "data_dir": "data", "val_size": 0, "batch_size": 128, "num_workers": 4},
        },  # fmt: skip
        "checkpoint": {"monitor": None, "dirpath": None},
        "test_after_fit": True,
        "run_dir": str(run_dir),
        "ckpt_path": None,
    }
    for key, value in overrides.items():
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return config


def write_run(
    run_dir: Path,
    arch: str,
    seed: int,
    test_acc: float,
    params: int,
    macs: int | None = None,
    config: dict | None = None,
    **report: object,
) -> Path:
    """Write a finished run's config.yaml and efficiency.json; ``report`` adds or replaces efficiency.json fields."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = config if config is not None else resolved_config(arch, seed, run_dir)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    efficiency = {
        "arch": arch,
        "params_total": params,
        "macs_per_sample": macs if macs is not None else params * 150,
        "best_val_acc": None,
        "test_acc": test_acc,
        "test_samples": 10_000,
        "test_ckpt_path": "checkpoints/epoch163-step64000.ckpt",
        "global_step": 64000,
        "global_batch_size": 128,
        "train_images_seen": 64000 * 128,
        "train_time_sec": 1000.0 + params / 1000,
        "precision": "16-mixed",
        "status": "finished",
        **report,
    }
    (run_dir / "efficiency.json").write_text(json.dumps(efficiency))
    return run_dir


def run_module(*args: str, code: int = 0) -> subprocess.CompletedProcess:
    """``python -m <args>`` in a fresh process from the repository root, as a user types it; asserts the exit status
    (``code``) and shows the output's tail when it differs."""
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=900)  # fmt: skip
    assert result.returncode == code, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result
