"""``benchmarks/gpu_check.py`` rehearsed on a CPU, as it must be before a borrowed GPU's few minutes: every path runs
(raw loops, ``fit`` eager, the captured fit, several runs started together) and every figure and ratio is written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_the_gpu_check_rehearses_every_path_on_a_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--fp32", "--archs", "resnet8",
         "--images", "128", "--batch-size", "64", "--runs", "2", "--json", str(out)],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["machine"]["torch"] == torch.__version__ and result["machine"]["images"] == 128
    (only,) = result["results"]
    rates = only["images_per_s"]
    assert list(rates) == ["raw loop", "raw loop + augmentation", "fit eager", "fit captured", "1 runs per device",
                           "2 runs per device"]  # fmt: skip
    assert rates["fit captured"] is None  # needs CUDA: said, not made up
    assert all(rate > 0 for name, rate in rates.items() if name != "fit captured")
    ratios = only["ratios"]
    assert ratios["fit eager / raw loop + augmentation"] == pytest.approx(
        rates["fit eager"] / rates["raw loop + augmentation"]
    )
    assert rates["1 runs per device"] == rates["fit eager"]
    assert ratios["2 runs / 1 run"] == pytest.approx(rates["2 runs per device"] / rates["1 runs per device"])
    assert ratios["fit captured / raw loop"] is None
