"""Tiny real runs laid out as a study, made once per test session for the sweep and report tests.

``<root>/study/<arch>/seed<k>/`` as the sweep lays runs out, made with today's CLI by fixing the
TensorBoard logger's directory (save_dir / name / version):

* resnet8 and plain8, seeds 0 and 1: finished (trained 2 epochs of 2 steps, then tested);
* resnet14, seed 0 only: finished (a one-seed variant, and the next depth of resnet8's line);
* plain14, seed 0: trained but never tested (as a crashed run leaves it): unfinished.
"""

from __future__ import annotations

from pathlib import Path

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
