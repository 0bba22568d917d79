"""bf16 autocast against fp32 on this CPU: the raw training step of a CIFAR ResNet, both in one run, interleaved.

Whether bf16 pays on a CPU depends on the CPU, not on the network: with AMX or AVX512-BF16 PyTorch's oneDNN runs bf16
convolutions natively; on an AVX2-only CPU (AMD Zen 2/3) it has no bf16 kernels and falls back to reference code.
``fit`` and ``sweep`` warn there (``src/cli_support/cpu_precision.py``); this measures how much it costs. Random images
(the arithmetic does not depend on them), batch 256, channels_last (as the fast recipe), Nesterov SGD; the ratio of
each repeat is fp32 img/s over bf16 img/s, and the median of the repeats is the figure.

    python -m benchmarks.cpu_bf16 --archs resnet20 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from src.cli_support.cpu_precision import bf16_is_emulated
from src.machine import cpu_features, cpu_model
from src.models import build_model


def images_per_second(arch: str, bf16: bool, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    model = build_model(arch, 10, 3).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    images = torch.randn(args.batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (args.batch_size,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    step()  # warm-up: oneDNN picks its kernels
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["resnet20"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"# {cpu_model()}; speed flags {cpu_features()}; bf16 emulated by PyTorch here: {bf16_is_emulated()}; "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")  # fmt: skip
    print("| network | fp32 img/s | bf16 img/s | fp32 / bf16 (median) | repeats |\n|---|---:|---:|---:|---|")
    for arch in args.archs:
        fp32, bf16 = [], []
        for _ in range(args.repeats):
            fp32.append(images_per_second(arch, False, args))
            bf16.append(images_per_second(arch, True, args))
        ratios = [a / b for a, b in zip(fp32, bf16, strict=True)]
        runs = ", ".join(f"{ratio:.2f}" for ratio in ratios)
        print(f"| {arch} | {statistics.median(fp32):,.0f} | {statistics.median(bf16):,.0f} | "
              f"**{statistics.median(ratios):.2f}x** | {runs} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
