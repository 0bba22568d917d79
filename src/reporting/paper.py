"""Reference numbers: He et al.'s Table 6, and the Wide and pre-activation ResNets' published CIFAR-10 errors.

He, Zhang, Ren, Sun, *Deep Residual Learning for Image Recognition* (CVPR 2016):

Table 6: CIFAR-10 test error (%) of the CIFAR ResNets (option A shortcuts), trained on all 50k
training images for 64k iterations (batch 128) and tested on the 10k test images. For
ResNet-110 the paper reports the best of 5 runs (6.43) and their mean ± std (6.61 ± 0.16);
the other depths are single numbers. Plain networks appear only as curves (Fig. 6), without a
table, so there are no plain reference numbers.

Parameters and MACs are this project's exact counts of the same networks (the paper rounds
them: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M, 19.4M parameters).

``PUBLISHED_ANCHORS``: Zagoruyko & Komodakis, *Wide Residual Networks* (BMVC 2016), CIFAR-10 test error of
WRN-40-4 (8.9M, 4.53%), WRN-16-8 (11.0M, 4.27%) and WRN-28-10 (36.5M, 4.00%; 3.89% with dropout, not listed)
from its table of CIFAR results without dropout, which also quotes He et al.'s pre-activation nets; and He,
Zhang, Ren, Sun, *Identity Mappings in Deep Residual Networks* (ECCV 2016): pre-activation ResNet-164 (1.7M,
5.46%) and ResNet-1001 (10.2M, 4.92%), bottleneck blocks. Each with the protocol it was trained under; a run is
compared with an anchor only when it follows that protocol (``anchor_differences``). ``params`` / ``macs`` are
this project's exact counts (ResNet-1001: 10,327,706 with batch norm's scale and shift; the paper's 10.2M is the
count without them, see tests/test_families.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from src.reporting.protocol import NOT_CHOSEN

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
    config: dict | None,
    report: dict,
    data: dict | None,
    test_split: str,
    checkpoint: str,
    paper_steps: int = PAPER_STEPS,
    paper_batch: int = PAPER_BATCH,
) -> list[str]:
    """Why one run's protocol differs from Table 6's (empty: same data, budget and test; the net is not checked).

    ``test_split`` / ``checkpoint`` as ``src.reporting.protocol.test_protocol`` words them. ``paper_steps`` /
    ``paper_batch``: another paper's budget on the same data and test (the Wide ResNets': 200 epochs at 128).
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
    if checkpoint not in NOT_CHOSEN:  # the paper tests the weights training ended with
        reasons.append(f"tested the {checkpoint}")
    steps, batch = report.get("global_step"), report.get("global_batch_size")
    if steps is None or steps < paper_steps or (batch is not None and batch != paper_batch):
        reasons.append(f"{steps} steps at batch {batch}, not {paper_steps:,} at {paper_batch}")
    return reasons


# ------------------------------------------------------------------------------------------------ other families


@dataclass(frozen=True)
class PublishedResult:
    """One published CIFAR-10 test error of a named network, with the protocol it was trained under."""

    arch: str  # this project's name of the network
    label: str  # the paper's name
    family: str  # src.models.names family: wrn | preact
    paper_params: str  # as the paper rounds it
    params: int  # this project's exact count of the same network
    macs: int
    test_error: float  # percent
    citation: str
    protocol: str


WRN_CITATION = "Zagoruyko & Komodakis 2016 (Wide ResNets)"
PREACT_CITATION = "He et al. 2016 (Identity Mappings)"
WRN_PROTOCOL = (
    "SGD with Nesterov momentum 0.9, lr 0.1 x 0.2 after epochs 60, 120 and 160, weight decay 5e-4, batch 128, "
    "200 epochs on all 50k training images, per-channel mean/std, pad-and-crop + flip, no dropout; the final model "
    "on the 10k test images"
)
PREACT_PROTOCOL = (
    "He et al. 2015's CIFAR recipe: SGD momentum 0.9, lr 0.1 (0.01 for the first 400 iterations) / 10 at 32k and "
    "48k iterations, weight decay 1e-4, 64k iterations at batch 128 on all 50k training images; the final model on "
    "the 10k test images"
)
WRN_EPOCHS = 200
WRN_STEPS = WRN_EPOCHS * -(-PAPER_TRAIN_IMAGES // PAPER_BATCH)  # 200 epochs of 391 batches of 128: 78,200

# fmt: off
PUBLISHED_ANCHORS = (
    PublishedResult("wrn40_4", "WRN-40-4", "wrn", "8.9M", 8_949_210, 1_298_582_016, 4.53, WRN_CITATION, WRN_PROTOCOL),
    PublishedResult("wrn16_8", "WRN-16-8", "wrn", "11.0M", 10_961_370, 1_548_145_664, 4.27, WRN_CITATION, WRN_PROTOCOL),
    PublishedResult(
        "wrn28_10", "WRN-28-10", "wrn", "36.5M", 36_479_194, 5_243_328_768, 4.00, WRN_CITATION, WRN_PROTOCOL
    ),
    PublishedResult(
        "preact_resnet164", "pre-act ResNet-164", "preact", "1.7M", 1_703_258, 244_500_992, 5.46, PREACT_CITATION,
        PREACT_PROTOCOL,
    ),
    PublishedResult(
        "preact_resnet1001", "pre-act ResNet-1001", "preact", "10.2M", 10_327_706, 1_487_849_984, 4.92,
        PREACT_CITATION, PREACT_PROTOCOL,
    ),
)
# fmt: on


def anchor_differences(
    family: str, config: dict | None, report: dict, data: dict | None, test_split: str, checkpoint: str
) -> list[str]:
    """Why a run's protocol differs from the one ``family``'s anchors were trained under (same checks as Table 6:
    CIFAR-10, all 50k training images, the official test split, the final model, the paper's budget and batch;
    the optimizer is not checked). The pre-activation paper trained for Table 6's budget, the WRN paper longer."""
    steps = WRN_STEPS if family == "wrn" else PAPER_STEPS
    return protocol_differences(config, report, data, test_split, checkpoint, paper_steps=steps)
