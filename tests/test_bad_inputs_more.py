"""Smaller bad inputs of the fault pass: a symlink loop in a class folder, '..' as a study name, a committed
study that names code from elsewhere under report --check, results folders that follow the umask and an export
raced by another sweep."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from src.data.base import DataError
from src.data.folder_listing import find_images
from src.sweep import main as sweep_main
from src.sweeping import results as results_module
from src.sweeping.results import export_run
from tests.conftest import REPO_ROOT
from tests.helpers import clean_environment
from tests.image_trees import write_image
from tests.study_runs import QUICKSTART, resolved_config, write_run


def test_a_symlink_loop_in_a_class_folder_is_one_data_error(tmp_path):
    write_image(tmp_path / "train" / "cat" / "a.png")
    os.symlink("..", tmp_path / "train" / "cat" / "loop")
    with pytest.raises(DataError, match=r"is the folder .*cat' again \(a symbolic link loop"):
        find_images(str(tmp_path / "train" / "cat"))


@pytest.mark.parametrize("name", ["..", "."])
def test_dots_are_no_study_name(tmp_path, capsys, name):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"name": name, "configs": [QUICKSTART], "archs": ["resnet8"]}))
    assert sweep_main([str(study), "--dry-run"]) == 2
    assert "study name must be a non-empty folder name" in capsys.readouterr().err


def test_report_check_does_not_import_code_a_committed_study_names(tmp_path):
    """CI runs --check on committed folders: a study naming a module from elsewhere is refused, not imported."""
    results = tmp_path / "results"
    run_dir = results / "resnet8" / "seed0"
    write_run(run_dir, "resnet8", 0, 0.8, 1000, config=resolved_config("resnet8", 0, run_dir))
    study = {"name": "s", "configs": [QUICKSTART], "archs": ["resnet8"], "results": str(results),
             "args": {"trainer.callbacks": [{"class_path": "antigravity.Fly"}]}}  # fmt: skip
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    (results / "results.json").write_text(json.dumps({"study": "s", "study_file": str(tmp_path / "s.yaml")}))
    code = (
        "import sys; from src.reporting.committed import config_problems; from pathlib import Path\n"
        f"print(config_problems(Path({str(results)!r})))\n"
        "print('imported' if 'antigravity' in sys.modules or 'webbrowser' in sys.modules else 'not imported')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=clean_environment(), capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "names code that is neither loaded nor part of this repository (antigravity.Fly)" in out.stdout
    assert out.stdout.strip().endswith("not imported")


def _finished_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    write_run(run_dir, "resnet8", 0, 0.8, 1000)
    return run_dir


def test_an_exported_result_follows_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        assert export_run(_finished_run(tmp_path), tmp_path / "results" / "resnet8" / "seed0") == "copied"
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "results" / "resnet8" / "seed0").stat().st_mode)
    assert mode == 0o755


def test_two_sweeps_exporting_one_run_at_once_both_succeed(tmp_path, monkeypatch):
    """The other sweep's rename lands between this one's check and its rename: the same files, so 'unchanged'."""
    run_dir = _finished_run(tmp_path)
    target = tmp_path / "results" / "resnet8" / "seed0"
    real_rename = os.rename
    raced_once = []

    def raced(src, dst):
        if Path(dst) == target and not raced_once:
            raced_once.append(True)
            export_run(run_dir, target)  # the other sweep wins the race
        return real_rename(src, dst)

    monkeypatch.setattr(results_module.os, "rename", raced)
    assert export_run(run_dir, target) == "unchanged"
    assert sorted(p.name for p in target.iterdir()) == sorted(results_module.result_files(run_dir))
    assert [p.name for p in target.parent.iterdir()] == ["seed0"]  # no staging folder left behind


def _solid(path: Path, size: int, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (value, value, value)).save(path)


def test_statistics_weigh_each_image_the_same_at_the_size_the_model_sees(tmp_path):
    """Ten dark 8 x 8 images and one bright 64 x 64: per image the bright one is 1 of 11, not 4096 of 4736 pixels."""
    from src.data.folder import ImageFolderDataModule

    for i in range(10):
        _solid(tmp_path / "train" / "a" / f"{i}.png", 8, 51)  # 0.2
        _solid(tmp_path / "train" / "b" / f"{i}.png", 8, 51)
    _solid(tmp_path / "train" / "b" / "big.png", 64, 255)  # 1.0
    data = ImageFolderDataModule(root=str(tmp_path), image_size=8, val_split=1, batch_size=4, num_workers=0,
                                 cache_dir=str(tmp_path / "cache"), fast=False)  # fmt: skip
    data.setup("fit")
    train = {path for path, _ in data.samples["train"]}
    expected = (0.2 * (len(train) - 1) + 1.0) / len(train) if str(tmp_path / "train/b/big.png") in train else 0.2
    assert data.mean == pytest.approx([round(expected, 6)] * 3, abs=2e-6)
    assert data.std[0] < 0.35  # pixel-weighted, the one big image made it ~0.3 and the mean ~0.87


def test_an_image_over_the_decompression_bomb_limit_is_reported_without_being_decoded(tmp_path, monkeypatch):
    from PIL import Image

    from src.data import folder_decode

    _solid(tmp_path / "small.png", 8, 100)
    _solid(tmp_path / "huge.png", 300, 100)  # 90,000 pixels: over the limit set below
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)
    decoded = []
    real_decode = folder_decode.decode
    monkeypatch.setattr(folder_decode, "decode", lambda path, *a: decoded.append(path) or real_decode(path, *a))
    results = folder_decode.probe([str(tmp_path / "small.png"), str(tmp_path / "huge.png")], 3, 0, 8)
    assert results[0][0] == "" and results[0][1] == pytest.approx([100 / 255] * 3)
    assert results[1][0].startswith("300 x 300 pixels: over the decompression-bomb limit of 50,000 pixels")
    assert decoded == [str(tmp_path / "small.png")]  # the huge one never reached the decoder


# ---------------------------------------------------------------- debris of killed writers
def test_a_cache_build_removes_what_a_killed_build_left(tmp_path):
    from src.data.fast import load_or_decode

    samples = []
    for i in range(4):
        write_image(tmp_path / "img" / f"{i}.png", (8, 8), seed=i)
        samples.append((str(tmp_path / "img" / f"{i}.png"), i % 2))
    cache = tmp_path / "cache"
    cache.mkdir()
    debris = cache / ".train-0123456789abcdef.uint8.4242.deadbeef.tmp"  # a killed build's preallocated file
    debris.write_bytes(b"\0" * 4096)
    keep = cache / "notes.txt"
    keep.write_text("mine\n")
    images = load_or_decode(samples, cache, "train", 3, 8)
    assert len(images) == 4 and not debris.exists() and keep.exists()


def test_a_fit_removes_what_a_killed_writer_left_in_its_run(tmp_path):
    from src.cli import main as cli_main
    from tests.study_runs import TINY

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    debris = [run_dir / "checkpoints" / ".last.ckpt.4242.deadbeef.tmp", run_dir / ".efficiency.json.4242.0badc0de.tmp"]
    for path in debris:
        path.write_bytes(b"\0" * 100)
    cli_main(["fit", "--config", QUICKSTART, "--run_dir", str(run_dir), "--model.arch", "resnet8", *TINY])
    assert not any(path.exists() for path in debris)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_a_process_waiting_for_a_cache_lock_names_the_holder_and_gives_up_after_its_timeout(tmp_path, capsys):
    from src.data.locking import lock_if_writable

    lock = tmp_path / ".build.lock"
    hold = (
        "import sys, time; from src.data.locking import lock_if_writable\n"
        f"with lock_if_writable({str(lock)!r}):\n    print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold], cwd=REPO_ROOT, env=clean_environment(),
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError, match=rf"pid {holder.pid} on \S+ since .* has held the lock"):
            with lock_if_writable(lock, timeout=1.0):
                pass
        assert f"waiting for pid {holder.pid} on " in capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait()


def test_a_cache_no_run_read_for_30_days_is_removed_at_the_next_build_and_a_read_one_is_kept(tmp_path):
    import time

    from src.data.fast import load_or_decode

    samples = []
    for i in range(3):
        write_image(tmp_path / "img" / f"{i}.png", (8, 8), seed=i)
        samples.append((str(tmp_path / "img" / f"{i}.png"), 0))
    cache = tmp_path / "cache"
    load_or_decode(samples[:2], cache, "train", 3, 8)  # a folder as it was
    (old,) = cache.glob("train-*.uint8")
    month_ago = time.time() - 31 * 86400
    os.utime(old, (month_ago, month_ago))
    load_or_decode(samples[:2], cache, "train", 3, 8)  # read again: in use, so kept and marked used
    assert old.exists() and old.stat().st_mtime > month_ago
    os.utime(old, (month_ago, month_ago))
    load_or_decode(samples, cache, "train", 3, 8)  # the folder changed: a new cache is built
    assert not old.exists() and len(list(cache.glob("train-*.uint8"))) == 1
