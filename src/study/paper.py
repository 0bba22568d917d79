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
