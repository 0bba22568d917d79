"""Paths a checkpoint carries are data: a resumed or evaluated checkpoint never makes a command touch files
outside its run.

A checkpoint restores ModelCheckpoint's recorded paths (``last_model_path``, ``best_model_path``,
``kth_best_model_path``, ``best_k_models``), the efficiency record's file name and its saved config (the
logger's ``save_dir/name/version``). Each test edits one of them in a real run's ``last.ckpt`` to name a file
or folder outside the run -- as a checkpoint from someone else could -- and checks that the command neither
deletes, overwrites, loads nor writes into it, and says what it ignored.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from src import runs
from src.callbacks.resume import RunCheckpoint
from src.cli import main
from src.cli_support.lightning_cli import best_to_test
from tests.study_runs import QUICKSTART, TINY

PRECIOUS = "notes that are not the run's\n"
FIT = ["fit", "--config", QUICKSTART, "--model.arch", "resnet8", *TINY]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A real one-epoch run (2 steps, its checkpoints in ``checkpoints/``), copied by each test before editing."""
    root = tmp_path_factory.mktemp("base")
    run_dir = root / "run"
    main([*FIT, "--run_dir", str(run_dir), "--trainer.max_epochs", "1", "--test_after_fit", "false"])
    return run_dir


@pytest.fixture
def place(tmp_path, monkeypatch) -> Path:
    """The test's working directory: the run is ``place/run``, files outside it lie in ``place``."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def copy_run(base_run: Path, place: Path) -> Path:
    run_dir = place / "run"
    shutil.copytree(base_run, run_dir)
    (run_dir / runs.LOCK_FILE).unlink(missing_ok=True)
    return run_dir


def edit_last(run_dir: Path, edit) -> Path:
    """Apply ``edit(checkpoint)`` to the run's ``last.ckpt`` in place, as someone could before sending the run."""
    path = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, path)
    return path


def callback_state(checkpoint: dict, name: str) -> dict:
    [key] = [key for key in checkpoint["callbacks"] if key.startswith(name)]
    return checkpoint["callbacks"][key]


def precious(place: Path, name: str) -> Path:
    path = place / name
    path.write_text(PRECIOUS)
    return path


def resume(run_dir: Path, *args: str) -> list[str]:
    """``fit --ckpt_path last`` of the run; the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main([*FIT, "--run_dir", str(run_dir), "--ckpt_path", "last", *args])
    return [str(warning.message) for warning in caught]


# ---------------------------------------------------------------- #6: restored checkpoint paths are never deleted
def test_a_resumed_fit_never_deletes_files_outside_the_run_that_its_checkpoint_names(base_run, place):
    run_dir = copy_run(base_run, place)
    last, kth = precious(place, "precious.txt"), precious(place, "precious-k.txt")
    escape_last = str(run_dir / "checkpoints" / ".." / ".." / last.name)  # lexically "inside" checkpoints/
    escape_kth = str(run_dir / "checkpoints" / ".." / ".." / kth.name)

    def edit(checkpoint: dict) -> None:
        state = callback_state(checkpoint, "RunCheckpoint")
        del state["dirpath"]  # Lightning then restores every recorded path
        state.update(
            last_model_path=escape_last,
            best_k_models={escape_kth: torch.tensor(-1.0)},  # the worst top-k: replaced (deleted) by the next one
            kth_best_model_path=escape_kth,
            kth_value=torch.tensor(-1.0),
        )

    edit_last(run_dir, edit)
    said = resume(run_dir, "--trainer.max_epochs", "2", "--test_after_fit", "false")
    assert last.read_text() == PRECIOUS and kth.read_text() == PRECIOUS  # both still there, unchanged
    [warning] = [message for message in said if "outside this run's checkpoint folder" in message]
    assert escape_last in warning and escape_kth in warning and "forgotten instead" in warning
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4  # resumed


def test_run_checkpoint_keeps_restored_paths_inside_its_folder_and_drops_the_rest(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    inside, outside = str(folder / "epoch1.ckpt"), str(tmp_path / "elsewhere.ckpt")
    callback = RunCheckpoint(dirpath=str(folder), monitor="val/acc", mode="max", save_last=True)
    state = {
        "best_model_score": torch.tensor(0.9),
        "best_model_path": outside,
        "best_k_models": {inside: torch.tensor(0.5), outside: torch.tensor(0.9)},
        "kth_best_model_path": outside,
        "kth_value": torch.tensor(0.9),
        "last_model_path": str(folder / "last.ckpt"),
    }  # no "dirpath": Lightning restores every path
    with pytest.warns(UserWarning, match="outside this run's checkpoint folder") as said:
        callback.load_state_dict(state)
    assert len([w for w in said if "outside this run" in str(w.message)]) == 1 and outside in str(said[0].message)
    assert callback.best_model_path == "" and callback.best_model_score is None
    assert callback.best_k_models == {inside: torch.tensor(0.5)}
    assert callback.kth_best_model_path == inside and float(callback.kth_value) == 0.5
    assert callback.last_model_path == str(folder / "last.ckpt")  # inside: kept as it was


def test_a_moved_run_keeps_its_best_checkpoint_and_score_when_resumed(base_run, place):
    """A run folder moved (or copied) elsewhere: its checkpoint names files of the old folder. Lightning then restores
    no score ("dirpath changed"), so the first validation after the resume became "best" whatever its score and the
    test after fit loaded it (an audit: test_acc of step 80 where best_val_step was 64). Now the old best stays best
    -- given a perfect score here, nothing after the resume can beat it -- and last.ckpt is replaced, not versioned."""
    run_dir = copy_run(base_run, place)  # base_run's checkpoint says base_run/checkpoints: a moved run
    old_best = callback_state(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True), "RunCheckpoint")
    assert old_best["dirpath"] == str(base_run / "checkpoints") and old_best["best_model_path"]
    best_name = os.path.basename(old_best["best_model_path"])

    def perfect(checkpoint: dict) -> None:
        state = callback_state(checkpoint, "RunCheckpoint")
        state["best_model_score"] = torch.tensor(1.0)
        state["best_k_models"] = {state["best_model_path"]: torch.tensor(1.0)}
        state["kth_best_model_path"], state["kth_value"] = state["best_model_path"], torch.tensor(1.0)

    edit_last(run_dir, perfect)
    said = resume(run_dir, "--trainer.max_epochs", "2")
    assert not [message for message in said if "outside this run's checkpoint folder" in message]
    resumed = callback_state(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True), "RunCheckpoint")
    assert resumed["best_model_path"] == str(run_dir / "checkpoints" / best_name)
    assert float(resumed["best_model_score"]) == 1.0
    assert not (run_dir / "checkpoints" / "last-v1.ckpt").exists()
    assert os.path.basename(runs.read_efficiency(str(run_dir))["test_ckpt_path"]) == best_name  # tested the best


# ---------------------------------------------------------------- #5: the test after fit loads only the run's own best
def test_the_test_after_a_resumed_fit_never_loads_a_best_checkpoint_outside_the_run(base_run, place):
    run_dir = copy_run(base_run, place)
    outside = place / "outside_best.ckpt"
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", outside)  # loadable: today it would be tested

    edit_last(
        run_dir, lambda checkpoint: callback_state(checkpoint, "RunCheckpoint").update(best_model_path=str(outside))
    )
    # Training is complete (max_epochs 1): the fit only tests, with the restored "best".
    said = resume(run_dir, "--trainer.max_epochs", "1", "--test_after_fit", "true")
    report = runs.read_efficiency(run_dir)
    assert report["test_acc"] is not None and report["test_ckpt_path"] != str(outside)
    assert report["test_ckpt_path"] is None or not report["test_ckpt_path"].startswith(os.sep)  # inside the run
    assert any(str(outside) in message and "outside this run's checkpoint folder" in message for message in said)


def test_best_to_test_takes_the_runs_own_best_checkpoint_for_one_outside_the_run(base_run, place):
    run_dir = copy_run(base_run, place)
    callback = RunCheckpoint(dirpath=str(run_dir / "checkpoints"))
    callback.best_model_path = str(place / "outside_best.ckpt")  # a plain ModelCheckpoint would keep it
    with pytest.warns(UserWarning, match="is not inside the run's checkpoint folder") as said:
        chosen = best_to_test(callback, str(run_dir))
    own = runs.best_checkpoint(str(run_dir))
    assert own is not None and chosen == own and os.path.dirname(own) == str(run_dir / "checkpoints")
    assert str(place / "outside_best.ckpt") in str(said[0].message) and own in str(said[0].message)
    inside = str(run_dir / "checkpoints" / "last.ckpt")
    callback.best_model_path = inside
    assert best_to_test(callback, str(run_dir)) == inside  # the usual case: exactly what Lightning recorded


# ---------------------------------------------------------------- #7: the efficiency record stays in the run
@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_a_resumed_fit_never_overwrites_a_file_outside_the_run_named_as_its_record(base_run, place, where):
    run_dir = copy_run(base_run, place)
    target = precious(place, "precious2.txt")
    name = "../precious2.txt" if where == "parent" else str(target)
    edit_last(run_dir, lambda checkpoint: callback_state(checkpoint, "ParameterEfficiency").update(filename=name))
    said = resume(run_dir, "--trainer.max_epochs", "2", "--test_after_fit", "false")
    assert target.read_text() == PRECIOUS
    report = runs.read_efficiency(run_dir)  # the run's own record, continued
    assert report["resumed_at_steps"] == [2] and report["global_step"] == 4
    assert any(repr(name) in message and "not a plain file name" in message for message in said)


# ---------------------------------------------------------------- #8: an evaluation writes into the checkpoint's run
def test_evaluating_a_runs_checkpoint_never_writes_into_a_folder_its_config_names(base_run, place, capsys):
    run_dir = copy_run(base_run, place)
    victim = place / "elsewhere" / "victim"
    victim.mkdir(parents=True)
    (victim / "notes.txt").write_text(PRECIOUS)

    def edit(checkpoint: dict) -> None:
        logger = checkpoint[runs.RUN_CONFIG_KEY]["trainer"]["logger"]
        logger["init_args"].update(save_dir=str(place / "elsewhere"), name="", version="victim")

    path = edit_last(run_dir, edit)
    main(["test", "--ckpt_path", str(path), "--trainer.enable_progress_bar", "false"])
    out = capsys.readouterr().out
    assert sorted(os.listdir(victim)) == ["notes.txt"] and (victim / "notes.txt").read_text() == PRECIOUS
    assert (run_dir / "evaluations" / "test.json").is_file()  # recorded with the checkpoint's own run
    assert f"names the run directory '{victim}'" in out and f"its own run '{run_dir}'" in out


def test_a_checkpoints_folder_that_links_elsewhere_keeps_only_checkpoint_files(tmp_path):
    """A received run whose checkpoints/ is a link to another folder puts that folder's files "inside" it; of
    those, only checkpoint files may be kept (and so ever replaced or deleted by Lightning)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("mine")
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").symlink_to(victim)
    folder = run / "checkpoints"
    callback = RunCheckpoint(dirpath=str(folder), monitor="val/acc", mode="max", save_last=True)
    named = str(folder / "notes.txt")
    state = {"best_model_score": torch.tensor(0.9), "best_model_path": named,
             "best_k_models": {named: torch.tensor(0.9)}, "kth_best_model_path": named,
             "kth_value": torch.tensor(0.9), "last_model_path": named}  # fmt: skip
    with pytest.warns(UserWarning, match="notes.txt"):
        callback.load_state_dict(state)
    assert callback.best_model_path == "" and callback.best_k_models == {} and callback.last_model_path == ""
    assert (victim / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["hparams.yaml", "evaluations"])
def test_a_run_folder_holding_a_planted_link_is_refused_before_anything_is_written(base_run, place, name):
    """Lightning's TensorBoardLogger writes hparams.yaml where no *file* is: a dangling link in a received run
    would be written through, creating its target wherever it points (evaluations/ likewise, as a folder)."""
    run_dir = copy_run(base_run, place)
    target = place / "elsewhere" / name
    (place / "elsewhere").mkdir()
    link = run_dir / name
    if link.is_dir():
        shutil.rmtree(link)
    link.unlink(missing_ok=True)
    link.symlink_to(target)  # dangling
    with pytest.raises(SystemExit) as stopped:
        main(
            [
                "test",
                "--ckpt_path",
                str(run_dir / "checkpoints" / "last.ckpt"),
                "--trainer.enable_progress_bar",
                "false",
            ]
        )
    assert f"holds '{name}' as symbolic link(s)" in str(stopped.value.code)
    assert not target.exists() and sorted(os.listdir(place / "elsewhere")) == []
