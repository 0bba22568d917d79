"""Training and inference throughput of the networks, measured side by side in one process.

For each architecture: images per second of a full SGD training step (forward, backward,
update) and of an inference forward pass, on random 32x32 (or ``--image-size``) batches --
no data loading, so the numbers are the network's own cost. Residual and plain twins have
the same MACs; this shows what the skip connections cost in time. Ratios between rows of one
run are meaningful; absolute numbers depend on the machine and what else it is doing.

    python benchmarks/throughput.py                                   # CPU or the first GPU
    python benchmarks/throughput.py --archs resnet20 plain20 resnet56 plain56 --batch-size 128
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch
import torch.nn.functional as F

from src.models import build_model
from src.models.complexity import count_macs, count_parameters


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(step, batch_size: int, device: torch.device, warmup: int, iterations: int) -> float:
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    synchronize(device)
    return batch_size * iterations / (time.perf_counter() - start)


def measure(arch: str, args: argparse.Namespace, device: torch.device) -> dict:
    model = build_model(arch, num_classes=10).to(device)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    @torch.no_grad()
    def infer_step() -> None:
        model(images)

    model.train()
    train = images_per_second(train_step, args.batch_size, device, args.warmup, args.iterations)
    model.eval()
    infer = images_per_second(infer_step, args.batch_size, device, args.warmup, args.iterations)
    return {
        "arch": arch,
        "params": count_parameters(model),
        "macs": count_macs(model, (3, args.image_size, args.image_size)),
        "train_images_per_sec": round(train, 1),
        "infer_images_per_sec": round(infer, 1),
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["resnet20", "plain20", "resnet56", "plain56"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"# {hardware}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    print("| Model | Params | MACs | Train img/s | Inference img/s |")
    print("|---|---:|---:|---:|---:|")
    for arch in args.archs:
        row = measure(arch, args, device)
        print(
            f"| `{arch}` | {row['params']:,} | {row['macs'] / 1e6:.2f}M | {row['train_images_per_sec']:,.1f} "
            f"| {row['infer_images_per_sec']:,.1f} |"
        )
        print(json.dumps(row), file=sys.stderr)


if __name__ == "__main__":
    main()
