"""``src.cli_support.checkpoint_config``: a ``--ckpt_path`` checkpoint's config as defaults, and its checks."""

from __future__ import annotations

import pytest
import torch

from src import runs
from src.cli_support import checkpoint_config as cc
from src.cli_support import config_files


def summary(hparams=None, shapes=None, run_config=None, data=None) -> dict:
    return {"path": "run/checkpoints/last.ckpt", "hparams": hparams or {}, "shapes": shapes or {},
            "global_step": 8, "run_config": run_config, "data": data}  # fmt: skip


def test_config_files_that_are_not_a_mapping_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_epochs: 1\n max_steps: 2\n")
    with pytest.raises(runs.RunError, match=r"is not valid YAML \(line 3, column 2\)"):
        config_files.read_config_file(str(bad))
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(runs.RunError, match="is empty"):
        config_files.read_config_file(str(tmp_path / "empty.yaml"))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(runs.RunError, match="holds a YAML list, not a mapping"):
        config_files.read_config_file(str(tmp_path / "list.yaml"))
    with pytest.raises(runs.RunError, match="cannot read config file"):
        config_files.read_config_file(str(tmp_path / "missing.yaml"))


def test_a_command_states_callbacks_on_its_line_or_in_a_config_file(tmp_path):
    compile_config = tmp_path / "compile.yaml"
    compile_config.write_text("trainer:\n  callbacks+:\n    - class_path: src.callbacks.CompileModel\n")
    plain = tmp_path / "plain.yaml"
    plain.write_text("trainer:\n  max_epochs: 2\n")
    assert cc.states_callbacks(["fit", "--trainer.callbacks+=X"], [])
    assert cc.states_callbacks(["fit"], [str(plain), str(compile_config)])
    assert not cc.states_callbacks(["fit", "--trainer.max_epochs", "3"], [str(plain)])


def test_early_settings_take_ckpt_path_and_run_dir_from_configs_and_the_line_wins(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("run_dir: from_a\nckpt_path: last\n")
    second.write_text("run_dir: from_b\n")
    assert cc.early_settings(["--help"]) is None
    assert cc.early_settings(["fit", "-c", str(first), "--config", str(second)]) == (
        "fit", "last", "from_b", [str(first), str(second)],
    )  # fmt: skip
    assert cc.early_settings(["test", "-c", str(first), "--run_dir", "mine"])[2] == "mine"
    with pytest.raises(runs.RunError, match="--ckpt_path best names a checkpoint of a run, but no run is given"):
        cc.early_settings(["test", "--ckpt_path", "best"])


def test_a_checkpoints_saved_config_becomes_flat_defaults():
    saved = {
        "seed_everything": 3,
        "trainer": {"max_epochs": 5, "precision": "32-true"},
        "model": {"arch": "resnet20", "num_classes": 10, "in_channels": 3},
        "data": {"class_path": "src.data.SyntheticDataModule", "init_args": {"batch_size": 8}},
        "test_after_fit": True,
        "run_dir": "not/a/default",
    }
    fit = cc.defaults_from_checkpoint(summary(run_config=saved), "fit")
    assert fit == {
        "seed_everything": 3,
        "trainer.max_epochs": 5,
        "trainer.precision": "32-true",
        "model.arch": "resnet20",  # num_classes / in_channels: linked from the DataModule, never set
        "data": saved["data"],
        "test_after_fit": True,
    }
    assert "test_after_fit" not in cc.defaults_from_checkpoint(summary(run_config=saved), "test")
    foreign = summary(hparams={"arch": "plain8", "_instantiator": "x"}, data={"class_path": "D", "init_args": {}})
    assert cc.defaults_from_checkpoint(foreign, "test") == {"model.arch": "plain8", "data": foreign["data"]}


def test_a_checkpoint_of_another_network_is_refused_by_name():
    checkpoint = summary(hparams={"arch": "resnet20", "num_classes": 10}, shapes={"w": (16, 3, 3, 3)})
    cc.check_fits_model(checkpoint, {"arch": "resnet20", "num_classes": 10}, {"w": (16, 3, 3, 3)})  # fits
    wrong_arch = "holds a network with arch='resnet20', but the config builds arch='plain20'"
    with pytest.raises(runs.RunError, match=wrong_arch):
        cc.check_fits_model(checkpoint, {"arch": "plain20", "num_classes": 10}, {"w": (16, 3, 3, 3)})
    with pytest.raises(runs.RunError, match=r"different tensors \(w, \.\.\.\)"):
        cc.check_fits_model(checkpoint, {"arch": "resnet20"}, {"w": (32, 3, 3, 3)})


def test_a_longer_resume_says_the_schedule_is_not_extended():
    checkpoint = summary(run_config={"trainer": {"max_epochs": 5, "max_steps": -1}})
    warning = cc.resume_changes(checkpoint, {"max_epochs": 8, "max_steps": -1})
    assert warning is not None and warning.startswith("Resuming with max_epochs 5 -> 8: ") and "NOT extended" in warning
    assert cc.resume_changes(checkpoint, {"max_epochs": 5, "max_steps": -1}) is None


def test_read_checkpoint_summarises_and_refuses_what_is_no_checkpoint(tmp_path):
    path = tmp_path / "c.ckpt"
    saved = {"state_dict": {"w": torch.zeros(2, 3)}, "hyper_parameters": {"arch": "resnet8"}, "global_step": 4}
    torch.save(saved, path)
    read = cc.checkpoint_summary(str(path))
    assert (read["shapes"], read["hparams"], read["global_step"], read["run_config"]) == (
        {"w": (2, 3)}, {"arch": "resnet8"}, 4, None,
    )  # fmt: skip
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    with pytest.raises(runs.RunError, match="cannot read checkpoint"):
        cc.checkpoint_summary(str(tmp_path / "junk.ckpt"))


def test_config_files_on_a_command_line_are_read_one_way_for_every_part_of_the_cli(tmp_path):
    """The early look for ``--ckpt_path`` and the typo message's "in FILE" share one reading of the line."""
    a, b, c = (tmp_path / f"{name}.yaml" for name in "abc")
    a.write_text("ckpt_path: first.ckpt\n")
    b.write_text("trainer:\n  max_step: 3\n")
    c.write_text("fit:\n  trainer.max_step: 4\n")
    argv = ["fit", "-c", str(a), f"--config={b}", f"-c{c}", "--trainer.max_epochs", "2"]
    assert config_files.config_files(argv) == [str(a), str(b), str(c)]
    assert cc.early_settings(argv) == ("fit", "first.ckpt", None, [str(a), str(b), str(c)])
    assert config_files.config_files_with_key(argv, "trainer.max_step") == [str(b), str(c)]
    assert config_files.config_files(["fit", "--config"]) == []  # the real parse reports the missing file
    assert config_files.config_files(["fit", "--conf", str(a)]) == []  # no abbreviations
    (tmp_path / "broken.yaml").write_text("trainer: [\n")
    assert config_files.config_files_with_key(["fit", "-c", str(tmp_path / "broken.yaml")], "trainer") == []
