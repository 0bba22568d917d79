"""``configs/debug/*.yaml`` stacked on the quickstart through the CLI, as their headers say to use them."""

from __future__ import annotations

import json

import pytest

from tests.test_cli import CONFIGS, QUICKSTART, TINY, cli

DEBUG = CONFIGS / "debug"


# The tiny quickstart without its epoch count, so a preset's own max_epochs holds.
i = TINY.index("--trainer.max_epochs")
TINY_ANY_EPOCHS = TINY[:i] + TINY[i + 2 :]


def fit(tmp_path, preset: str, *extra: str):
    args = ["--config", QUICKSTART, "--config", str(DEBUG / f"{preset}.yaml"), *TINY_ANY_EPOCHS, *extra]
    result = cli("fit", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, tmp_path / "lightning_logs" / "quickstart" / "version_0"


def test_every_debug_preset_is_tested_here():
    assert sorted(p.stem for p in DEBUG.glob("*.yaml")) == sorted(PRESETS)


def test_fast_dev_run_runs_one_batch_of_each_loop(tmp_path):
    result, run_dir = fit(tmp_path, "fast_dev_run")
    output = result.stdout + result.stderr
    assert "Running in `fast_dev_run` mode: will run the requested loop using 1 batch(es)" in output
    record = json.loads((run_dir / "efficiency.json").read_text())
    assert record["global_step"] == 1  # one optimizer step, whatever max_epochs says
    assert record["test_acc"] is not None and record["test_samples"] == 64  # test ran too (one batch of 64)


def test_overfit_batches_trains_on_a_few_fixed_batches(tmp_path):
    # 640 training samples at batch 32 are 20 batches an epoch; the preset keeps the first 4. Over 3 epochs
    # (the preset's 60 shortened) that is 12 steps of 32 images; validation takes 4 batches of 32 too, but the
    # tiny data has only 64 validation samples (2 batches).
    extra = ["--data.batch_size", "32", "--data.train_size", "640", "--trainer.max_epochs", "3"]
    _, run_dir = fit(tmp_path, "overfit_batches", *extra, "--trainer.check_val_every_n_epoch", "1")
    record = json.loads((run_dir / "efficiency.json").read_text())
    assert record["global_step"] == 12 and record["epoch"] == 3
    assert record["train_images_seen"] == 12 * 32 and record["val_samples"] == 64


@pytest.mark.slow
def test_limit_batches_trims_every_loop_and_keeps_the_run(tmp_path):
    # 32-sample batches: 256 training samples are 8 batches, the preset keeps them (limit 10); val 64 = 2 batches
    # of the preset's 4; 2 epochs -> 16 steps; the run directory is a full one (checkpoints, config).
    _, run_dir = fit(tmp_path, "limit_batches", "--data.batch_size", "32", "--data.train_size", "640")  # 2 epochs
    record = json.loads((run_dir / "efficiency.json").read_text())
    assert record["global_step"] == 20  # 640 / 32 = 20 batches an epoch, limited to 10, for 2 epochs
    assert record["val_samples"] == 64 and record["test_samples"] == 64
    assert (run_dir / "config.yaml").exists() and (run_dir / "checkpoints" / "last.ckpt").exists()


def test_profiler_writes_its_table_into_the_run_directory(tmp_path):
    _, run_dir = fit(tmp_path, "profiler", "--trainer.limit_train_batches", "2")
    profile = (run_dir / "fit-profile.txt").read_text()
    assert "FIT Profiler Report" in profile and "run_training_epoch" in profile
    assert "TEST Profiler Report" in (run_dir / "test-profile.txt").read_text()  # the test after fit, beside it
    record = json.loads((run_dir / "efficiency.json").read_text())
    assert record["global_step"] == 2 and record["epoch"] == 1  # the preset's one epoch of 2 batches


PRESETS = ["fast_dev_run", "overfit_batches", "limit_batches", "profiler"]


@pytest.mark.parametrize("preset", PRESETS)
def test_debug_presets_print_as_valid_configs(preset, capsys):
    from src.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", QUICKSTART, "--config", str(DEBUG / f"{preset}.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
