"""Faults of files and input (issue 14, items 4, 5, 7, 9, 10, 11): full and read-only disks, broken caches,
bad invocations, resume on the fast folder path, and what a run tells the user.

CPU only, tiny image folders made on the spot. A full or read-only disk is a real small tmpfs where the
test may mount one (root in a container that allows it), else a write that raises ``OSError(ENOSPC)``.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import signal
import subprocess
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from src import runs
from src.callbacks.checkpoint_io import AtomicCheckpointIO
from src.callbacks.resume import mark_epoch_completed
from src.cli import main
from src.data.fast import Uint8Images, load_or_decode
from src.data.folder import ImageFolderDataModule
from src.files import atomic_write, disk_error_message
from tests.image_trees import write_image, write_tree
from tests.test_resume import cli, launch

COUNTS = {"train": {"cat": 20, "dog": 20}, "test": {"cat": 4, "dog": 4}}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """16 x 16 images in two learnable classes: 40 train (8 held out for val), 8 test."""
    return write_tree(tmp_path_factory.mktemp("faults") / "tree", COUNTS, size=(16, 16), learnable=True)


def folder_args(tree: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "--model.arch", "resnet8",
        "--seed_everything", "3",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.accelerator", "cpu",
        "--trainer.num_sanity_val_steps", "0",
        "--data", "ImageFolderDataModule",
        "--data.root", str(tree),
        "--data.batch_size", "8",
        "--data.val_split", "8",
        "--data.num_workers", "0",
        "--data.cache_dir", str(cache),
        *extra,
    ]  # fmt: skip


def fails(args: list[str], capsys) -> str:
    """Run the CLI in-process; it must exit non-zero. Returns the one message it printed (or exited with)."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    code = exit_info.value.code
    assert code not in (0, None)
    err = capsys.readouterr().err
    message = code if isinstance(code, str) else err
    assert "Traceback" not in err
    return message.strip()


@contextlib.contextmanager
def small_filesystem(path: Path, size: str, read_only: bool = False):
    """A tmpfs of ``size`` mounted at ``path``, or ``None`` where mounting is not allowed (not root, no caps)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    try:  # FAULTS_IO_NO_MOUNT=1 runs the fallback where mounting would work
        mounted = (
            not os.environ.get("FAULTS_IO_NO_MOUNT")
            and os.geteuid() == 0
            and subprocess.run(
                ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, timeout=10
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        mounted = False
    try:
        yield path if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


# ---------------------------------------------------------------- disk faults
def test_atomic_write_keeps_the_old_file_and_leaves_no_temporary_on_a_full_disk(tmp_path):
    target = tmp_path / "efficiency.json"
    target.write_text('{"old": true}')

    def half_then_full(handle):
        handle.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as error:
        atomic_write(target, half_then_full)
    assert error.value.filename == str(target) and error.value.errno == errno.ENOSPC
    assert target.read_text() == '{"old": true}' and sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    message = disk_error_message(error.value)
    assert message.startswith(f"cannot write '{target}': the disk is full") and "--run_dir" in message


def test_checkpoint_io_writes_beside_the_checkpoint_never_in_tmpdir(tmp_path, monkeypatch):
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.arange(4.0)}}, path)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.arange(4.0))
    assert os.listdir(path.parent) == ["last.ckpt"] and os.listdir(tmpdir) == []


def test_full_disk_during_fit_is_one_line_and_leaves_no_fragment(tree, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    args = folder_args(tree, tmp_path / "cache", "--trainer.max_steps", "3", "--test_after_fit", "false")
    with small_filesystem(tmp_path / "small", "640k") as small:
        if small is None:  # no mount: every checkpoint write runs out of space after 200 kB
            run_dir = tmp_path / "run"
            real_save = torch.save

            def full_disk(obj, handle, *a, **k):
                real_save(obj, handle, *a, **k)
                handle.truncate(200_000)
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr("src.callbacks.checkpoint_io.torch.save", full_disk)
        else:
            run_dir = small / "run"
        message = fails(["fit", *args, "--run_dir", str(run_dir)], capsys)
        assert message.startswith(f"error: cannot write '{run_dir / 'checkpoints'}") and ".ckpt'" in message
        assert "the disk is full" in message and "free space" in message
        leftovers = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
        assert leftovers == []  # no fragment of a checkpoint, no temporary file
    assert os.listdir(tmpdir) == []


def test_read_only_run_directory_is_one_line(tree, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = folder_args(tree, tmp_path / "cache", "--trainer.max_steps", "2", "--test_after_fit", "false")
    with small_filesystem(tmp_path / "ro", "64k", read_only=True) as read_only:
        if read_only is None:
            read_only = tmp_path / "ro"
            real_open = os.open

            def refuse(path, flags, *a, **k):
                if str(path).startswith(str(read_only)) and flags & os.O_CREAT:
                    raise OSError(errno.EROFS, "Read-only file system", str(path))
                return real_open(path, flags, *a, **k)

            real_makedirs = os.makedirs

            def refuse_directory(path, *a, **k):
                if str(path).startswith(str(read_only)):
                    raise OSError(errno.EROFS, "Read-only file system", str(path))
                return real_makedirs(path, *a, **k)

            monkeypatch.setattr(os, "open", refuse)
            monkeypatch.setattr(os, "makedirs", refuse_directory)
        message = fails(["fit", *args, "--run_dir", str(read_only / "run")], capsys)
    assert message.startswith(f"error: cannot write '{read_only}") and "read-only" in message
    assert "--run_dir" in message and len(message.splitlines()) == 1


# ---------------------------------------------------------------- caches heal
def test_truncated_decode_cache_is_named_and_rebuilt(tmp_path):
    samples = [(str(write_image(tmp_path / f"{i}.png", size=(8, 8), seed=i)), i % 2) for i in range(6)]
    mapped = load_or_decode(samples, tmp_path / "cache", "train")
    first = Uint8Images(mapped.images.clone(), mapped.labels)  # in memory: the file is about to be cut short
    del mapped  # (overwriting a mapped file in place would pull its pages from under the mapping)
    (cache,) = [p for p in (tmp_path / "cache").iterdir() if p.name != ".build.lock"]
    cache.write_bytes(cache.read_bytes()[:300])  # a copy cut short
    with pytest.warns(UserWarning, match=f"decoded-image cache {cache} is unreadable"):
        again = load_or_decode(samples, tmp_path / "cache", "train")
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".build.lock", cache.name]  # rewritten whole
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(load_or_decode(samples, tmp_path / "cache", "train").images, first.images)


def test_corrupt_statistics_cache_is_named_and_rebuilt(tree, tmp_path, recwarn):
    options = dict(root=str(tree), cache_dir=str(tmp_path / "cache"), num_workers=0, val_split=8, fast=False)
    first = ImageFolderDataModule(**options)
    first.setup("fit")
    files = sorted((tmp_path / "cache").glob("folder-*.json"))
    assert len(files) == 2  # the file check and the statistics
    for path in files:
        path.write_text(path.read_text()[:10])  # truncated JSON
    second = ImageFolderDataModule(**options)
    second.setup("fit")
    named = [str(w.message) for w in recwarn if "data cache" in str(w.message)]
    assert sorted(str(p) for p in files) == sorted(m.split("'")[1] for m in named)
    assert (second.mean, second.std) == (first.mean, first.std)
    assert all(isinstance(json.loads(p.read_text()), dict) for p in (tmp_path / "cache").glob("folder-*.json"))


def test_file_check_cache_sees_a_file_replaced_in_place(tmp_path):
    root = write_tree(tmp_path / "data", {"train": {"a": 4, "b": 4}}, size=(8, 8))
    options = dict(root=str(root), cache_dir=str(tmp_path / "cache"), num_workers=0, val_split=2, fast=False)
    ImageFolderDataModule(**options).setup("fit")
    broken = root / "train" / "a" / "0.png"
    broken.write_bytes(b"not an image")  # same path, new size and mtime
    with pytest.raises(ValueError, match="0.png"):
        ImageFolderDataModule(**options).setup("fit")


# ---------------------------------------------------------------- messages; nothing written
@pytest.mark.parametrize(
    "case, expected",
    [
        ("bad_yaml", "is not valid YAML (line 3, column 2)"),
        ("empty_yaml", "is empty; a config is a YAML mapping"),
        ("abbreviation", "unrecognized arguments: --trainer.max_epoch 2 (did you mean: "),
        ("config_typo", "'trainer.max_step' (in typo.yaml; did you mean 'trainer.max_steps'?)"),
        ("config_typo_nested", "'model.archh' (in typo2.yaml; did you mean 'model.arch'?)"),
        ("float_batch", "--data.init_args.batch_size: invalid value '1.5'; valid: an integer"),
        ("ckpt_without_run", "--ckpt_path last names a checkpoint of a run, but no run is given: add --run_dir"),
        ("long_warmup", "total_steps (3) must be larger than warmup_steps (50)"),
        ("max_steps_0", "--trainer.max_steps 0: give -1 (no limit, max_epochs decides) or >= 1"),
        ("run_dir_file", "--run_dir 'a_file' is a file, not a directory"),
    ],
)
def test_bad_invocations_say_what_is_wrong_and_write_nothing(case, expected, tree, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("trainer:\n  max_epochs: 1\n model: [\n")
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "typo.yaml").write_text("trainer:\n  max_step: 3\n")  # a typo in a file: the file is named
    (tmp_path / "typo2.yaml").write_text("trainer:\n  max_epochs: 1\nmodel:\n  archh: resnet8\n")
    base = ["fit", *folder_args(tree, tmp_path / "cache", "--trainer.max_steps", "3")]
    args = {
        "bad_yaml": [*base, "--config", "bad.yaml"],
        "empty_yaml": [*base, "--config", "empty.yaml"],
        "abbreviation": [*base, "--trainer.max_epoch", "2"],
        "config_typo": [*base, "--config", "typo.yaml"],
        "config_typo_nested": [*base, "--config=typo2.yaml"],
        "float_batch": [*base, "--data.init_args.batch_size", "1.5"],
        "ckpt_without_run": ["test", "--ckpt_path", "last"],
        "long_warmup": [
            *base,
            "--model.lr_scheduler",
            "src.modules.WarmupCosineLR",
            "--model.lr_scheduler.init_args.warmup_steps",
            "50",
            "--model.lr_scheduler_interval",
            "step",
        ],  # fmt: skip
        "max_steps_0": [*base, "--trainer.max_steps", "0"],
        "run_dir_file": [*base, "--run_dir", "a_file"],
    }[case]
    (tmp_path / "a_file").write_text("not a run\n")
    message = fails(args, capsys)
    assert message.startswith("error: ") and expected in message, message
    assert not (tmp_path / "lightning_logs").exists()  # no partial run directory: no config.yaml, no events file


def test_study_file_with_a_syntax_error_is_called_that(tmp_path):
    (tmp_path / "study.yaml").write_text("archs: [resnet8\nseeds: [0]\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        [sys_executable(), "-m", "src.sweep", "study.yaml", "--dry-run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "study file 'study.yaml' is not valid YAML (line 2" in result.stderr and "run config" not in result.stderr


def sys_executable() -> str:
    import sys

    return sys.executable


# ---------------------------------------------------------------- defaults and a visible run
def test_preset_follows_the_image_size_and_a_test_folder_means_testing(tree, tmp_path):
    small = ImageFolderDataModule(root=str(tree), cache_dir=str(tmp_path / "c"), num_workers=0)
    assert (small.preset, small.fast, small.has_test_split) == ("cifar", True, True)
    big = write_tree(tmp_path / "big", {"train": {"a": 2, "b": 2}}, size=(80, 72))
    large = ImageFolderDataModule(root=str(big), cache_dir=str(tmp_path / "c"), num_workers=0)
    assert (large.image_size, large.preset, large.fast, large.has_test_split) == (72, "imagenet", False, False)
    assert ImageFolderDataModule(root=str(big), test_on_val=True, cache_dir=str(tmp_path / "c")).has_test_split


def test_bare_folder_fit_tests_says_where_and_lists_what_it_wrote(tree, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["fit", *folder_args(tree, tmp_path / "cache", "--trainer.max_steps", "2"), "--run_dir", "run"])
    out = capsys.readouterr().out
    assert "Run directory: run\n" in out
    wrote = next(line for line in out.splitlines() if line.startswith("Wrote in run: "))
    for name in ("checkpoints/last.ckpt", "config.yaml", "data.json", "efficiency.json"):
        assert name in wrote
    report = runs.read_efficiency(tmp_path / "run")
    assert report["test_acc"] is not None  # test/ exists: tested without being asked
    assert json.loads((tmp_path / "run" / "data.json").read_text())["preset"] == "cifar"
    # No optimizer given: the saved config names the one that ran (it said `optimizer: null`), and a resume
    # from it is the same run.
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["optimizer"] == "src.modules.classifier.paper_sgd"
    assert (report["optimizer"], report["lr"]) == ("SGD", 0.1)
    main(
        [
            "fit",
            *folder_args(tree, tmp_path / "cache", "--trainer.max_steps", "3"),
            "--run_dir",
            "run",
            "--ckpt_path",
            "last",
        ]
    )
    assert runs.read_efficiency(tmp_path / "run")["global_step"] == 3


@pytest.mark.parametrize("fast", ["true", "false"])
def test_folder_predictions_carry_class_names_and_files(fast, tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = folder_args(tree, tmp_path / "cache", "--trainer.max_steps", "1", "--test_after_fit", "false")
    main(["fit", *args, "--data.fast", fast, "--run_dir", "run"])
    main(["predict", "--ckpt_path", "run/checkpoints/last.ckpt", "--run_dir", "pred"])
    rows = list(csv.DictReader((tmp_path / "pred" / "predictions.csv").open()))
    expected = sorted(str(p) for p in (tree / "test").rglob("*.png"))
    assert sorted(row["file"] for row in rows) == expected  # every test file once (in the split's seeded order)
    assert all(row["class_name"] in ("cat", "dog") for row in rows)
    assert [Path(row["file"]).parent.name for row in rows] == [("cat", "dog")[int(row["label"])] for row in rows]


# ---------------------------------------------------------------- resume on the fast folder path
def test_epoch_end_state_becomes_the_next_epochs_start():
    done = {"ready": 5, "completed": 5, "started": 5, "processed": 5}
    loops = {
        "fit_loop": {
            "epoch_progress": {
                "total": {"ready": 1, "completed": 0, "started": 1, "processed": 1},
                "current": {"ready": 1, "completed": 0, "started": 1, "processed": 1},
            },
            "epoch_loop.batch_progress": {"total": dict(done), "current": dict(done), "is_last_batch": True},
        }
    }
    assert mark_epoch_completed(loops)
    fit = loops["fit_loop"]
    assert fit["epoch_progress"]["total"]["completed"] == 1 and fit["epoch_progress"]["current"]["completed"] == 1
    assert fit["epoch_loop.batch_progress"]["current"] == dict.fromkeys(done, 0)
    assert fit["epoch_loop.batch_progress"]["total"] == done and not mark_epoch_completed(loops)


@pytest.mark.slow
def test_fast_folder_bf16_max_steps_resume_equals_the_uninterrupted_run(tree, tmp_path):
    """kill -9 at step 6 (4 steps per epoch; newest checkpoint: last.ckpt at step 4), resume, end at step 14."""
    args = folder_args(
        tree, tmp_path / "cache",
        "--data.preset", "cifar", "--data.fast", "true",
        "--trainer.precision", "bf16-mixed", "--trainer.max_steps", "14",
        "--model.lr_scheduler", "src.modules.WarmupCosineLR",
        "--model.lr_scheduler.init_args.warmup_steps", "2",
        "--model.lr_scheduler_interval", "step",
        "--trainer.callbacks+=tests.helpers.KillAt",
    )  # fmt: skip
    straight = launch("fit", *args, "--run_dir", "straight", cwd=tmp_path)
    killed = cli("fit", *args, "--run_dir", "killed", cwd=tmp_path, env={"KILL_AT_STEP": "6"})
    assert killed.returncode == -signal.SIGKILL
    assert torch.load(tmp_path / "killed/checkpoints/last.ckpt", weights_only=True)["global_step"] == 4
    resumed = cli("fit", "--run_dir", "killed", "--ckpt_path", "last", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "could not find the monitored key" not in resumed.stderr
    _, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err[-3000:]
    final = [torch.load(tmp_path / run / "checkpoints/last.ckpt", weights_only=True) for run in ("straight", "killed")]
    assert final[0]["global_step"] == final[1]["global_step"] == 14
    assert all(torch.equal(final[0]["state_dict"][k], final[1]["state_dict"][k]) for k in final[0]["state_dict"])
    metrics = [runs.read_metrics(tmp_path / run) for run in ("straight", "killed")]
    for key in ("val/acc", "val/loss", "train/loss_epoch"):
        assert metrics[0][key] == metrics[1][key], key  # same values at the same logged steps
    assert [step for step, _ in metrics[1]["val/loss"]] == [3, 7, 11, 13]
    reports = [runs.read_efficiency(tmp_path / run) for run in ("straight", "killed")]
    assert reports[0]["test_acc"] == reports[1]["test_acc"] and reports[1]["resumed_at_steps"] == [4]
