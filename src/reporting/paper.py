"""Reference numbers from He, Zhang, Ren, Sun, *Deep Residual Learning for Image Recognition* (CVPR 2016).

Table 6: CIFAR-10 test error (%) of the CIFAR ResNets (option A shortcuts), trained on all 50k
training images for 64k iterations (batch 128) and tested on the 10k test images. For
ResNet-110 the paper reports the best of 5 runs (6.43) and their mean ± std (6.61 ± 0.16);
the other depths are single numbers. Plain networks appear only as curves (Fig. 6), without a
table, so there are no plain reference numbers.

Parameters and MACs are this project's exact counts of the same networks (the paper rounds
them: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M, 19.4M parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

CITATION = "He et al. 2016, Table 6"


@dataclass(frozen=True)
class PaperResult:
    depth: int
    params: int
    macs: int
    test_error: float  # percent; best run for ResNet-110
    mean_error: float | None = None  # mean over runs, where the paper gives one
    std_error: float | None = None


CIFAR10_TABLE6 = (
    PaperResult(20, 269_722, 40_551_040, 8.75),
    PaperResult(32, 464_154, 68_862_592, 7.51),
    PaperResult(44, 658_586, 97_174_144, 7.17),
    PaperResult(56, 853_018, 125_485_696, 6.97),
    PaperResult(110, 1_727_962, 252_887_680, 6.43, mean_error=6.61, std_error=0.16),
    PaperResult(1202, 19_421_274, 2_829_238_912, 7.93),
)

# The paper's protocol for Table 6 (Sec. 4.2): 64k iterations at batch 128 on all 50k training images, the final
# model tested on the official 10k test images.
PAPER_STEPS = 64_000
PAPER_BATCH = 128
PAPER_TRAIN_IMAGES = 50_000


def protocol_differences(
    config: dict | None, report: dict, data: dict | None, test_split: str, checkpoint: str
) -> list[str]:
    """Why one run's protocol differs from Table 6's (empty: same data, budget and test; the net is not checked).

    ``test_split`` / ``checkpoint`` as ``src.reporting.protocol.test_protocol`` words them.
    """
    reasons = []
    data_section = (config or {}).get("data") or {}
    init = data_section.get("init_args", {}) if isinstance(data_section, dict) else {}
    data_class = str(data_section.get("class_path", "") if isinstance(data_section, dict) else "") or str(
        report.get("data") or ""
    )
    dataset = str(init.get("dataset") or report.get("dataset") or "")
    root = str((data or {}).get("root") or init.get("root") or "").lower()
    if "CIFAR" in data_class:
        if dataset.lower() != "cifar10":
            reasons.append(f"data set {dataset or 'unknown'}, not CIFAR-10")
        elif init.get("val_size", 5000) != 0:
            reasons.append(f"trained on {PAPER_TRAIN_IMAGES - int(init.get('val_size', 5000)):,} of the 50,000 images")
    elif "ImageFolder" in data_class or data:
        sizes = (data or {}).get("split_sizes") or {}
        if "cifar10" not in root or "cifar100" in root:
            reasons.append("a folder data set not recognisably CIFAR-10")
        elif sizes.get("train") != PAPER_TRAIN_IMAGES:
            reasons.append(f"trained on {sizes.get('train', 'an unknown number of')} images, not all 50,000")
    else:
        reasons.append(f"data {data_class.rsplit('.', 1)[-1] or 'not recorded'}, not CIFAR-10")
    official = test_split == "official test split" or (
        test_split == "test/ folder" and report.get("test_samples") == 10_000
    )
    if not official:
        reasons.append(f"tested on the {test_split}")
    if checkpoint != "final checkpoint" and checkpoint != "last checkpoint":
        reasons.append(f"tested the {checkpoint}")
    steps, batch = report.get("global_step"), report.get("global_batch_size")
    if steps is None or steps < PAPER_STEPS or (batch is not None and batch != PAPER_BATCH):
        reasons.append(f"{steps} steps at batch {batch}, not {PAPER_STEPS:,} at {PAPER_BATCH}")
    return reasons
