"""A bf16 run on a CPU that emulates bf16 is told so: it trains ~11x slower than fp32 there (BENCHMARKS.md)."""

from __future__ import annotations

import platform

import pytest
import torch
import yaml
from lightning.pytorch import Trainer

from benchmarks import cpu_bf16
from src.cli_support import cpu_precision
from src.machine import cpu_features, cpu_model
from src.sweep import main as sweep_main
from src.sweeping import cpu_precision_check
from tests.study_runs import QUICKSTART, TINY


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the CPU flags below are x86's")
def test_bf16_counts_as_emulated_exactly_on_cpus_without_avx512():
    features = cpu_features()
    if features is None:
        pytest.skip("no /proc/cpuinfo flags to compare with")
    # oneDNN's bf16 kernels need AVX-512 (avx512_bf16 / AMX make them fast); an AVX2-only CPU gets none.
    assert cpu_precision.bf16_is_emulated() == ("avx512f" not in features), features


@pytest.mark.parametrize(
    ("precision", "emulated", "warned"),
    [("bf16-mixed", True, True), ("bf16-true", True, True), ("32-true", True, False), ("bf16-mixed", False, False)],
)
def test_only_bf16_on_an_emulating_cpu_is_warned(monkeypatch, precision, emulated, warned):
    monkeypatch.setattr(cpu_precision, "bf16_is_emulated", lambda: emulated)
    trainer = Trainer(accelerator="cpu", precision=precision, logger=False, enable_checkpointing=False)
    notice = cpu_precision.slow_bf16_notice(trainer)
    assert (notice is not None) == warned
    if warned:
        assert f"trainer.precision {precision}" in notice and cpu_model() in notice
        assert "--trainer.precision 32-true" in notice  # what to do about it


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_a_sweep_of_bf16_cpu_runs_says_so_before_it_trains(tmp_path, monkeypatch, capsys, precision):
    """A sweep shows one line per run: without this the user learns it from a run log's ETA of a day."""
    monkeypatch.setattr(cpu_precision_check, "bf16_is_emulated", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "s", "root": str(tmp_path / "logs"), "configs": [QUICKSTART], "archs": ["resnet8"], "seeds": [0, 1],
        "args": {"trainer.precision": precision},
    }))  # fmt: skip
    assert sweep_main([str(study), "--dry-run", "--", *TINY]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    if precision == "32-true":
        assert notes == []
    else:
        assert len(notes) == 1 and notes[0].startswith("note: resnet8/seed0 trains in bf16-mixed on this CPU")
        assert "-- --trainer.precision 32-true" in notes[0]


def test_the_bf16_benchmark_prints_the_machine_and_a_ratio_per_network(capsys):
    """``python -m benchmarks.cpu_bf16`` (BENCHMARKS.md's command), at a size that takes a second."""
    cpu_bf16.main(["--archs", "resnet8", "--batch-size", "8", "--steps", "1", "--repeats", "2"])
    header, columns, rule, row = capsys.readouterr().out.splitlines()
    assert header.startswith(f"# {cpu_model()}; speed flags {cpu_features()}; ")
    assert f"bf16 emulated by PyTorch here: {cpu_precision.bf16_is_emulated()}" in header
    assert columns.startswith("| network | fp32 img/s | bf16 img/s | fp32 / bf16 (median) |")
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[0] == "resnet8" and float(cells[3].strip("*x")) > 0
    assert len(cells[4].split(", ")) == 2  # one ratio per repeat
