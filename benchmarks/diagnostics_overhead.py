"""What the training-diagnostics callback costs: off (the default), and per measured step when on.

The callback's cost has three parts, each timed directly in the same process as CPU time of
this process (``time.process_time``): the machine is shared with other jobs, and wall-clock
differences of whole training steps drown in that noise, so the callback's own work is timed
from the inside rather than as a difference of two step times.

* ``step``: one SGD training step (forward, backward, update), for scale;
* ``hooks + norms``: on a measured step, the time spent inside the callback's forward hooks
  (per-sample norms of each block's branch output and of its shortcut's output or input, and
  their ratio) plus reading out the per-block gradient statistics (RMS per weight, ||g|| / ||w||,
  raw norm) and ratios;
* ``log``: writing one measurement -- scalars and depth histograms to TensorBoard, a line of
  ``diagnostics.jsonl`` -- and, separately, drawing the optional profile figure;
* ``off``: the disabled callback's three per-step hook calls (the cost every run pays).

Overhead per step at interval N = (hooks + norms + log) / (N x step).

    python benchmarks/diagnostics_overhead.py
    python benchmarks/diagnostics_overhead.py --archs resnet20 plain20 resnet56 resnet18 --batch-size 128
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger

from src.callbacks import TrainingDiagnostics
from src.callbacks.diagnostics import BranchRatioRecorder, block_layout, gradient_statistics
from src.models import build_model
from src.models.blocks import residual_blocks


def cpu_seconds(function, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        function()
        times.append(time.process_time() - start)
    return times


def measure(arch: str, args: argparse.Namespace, log_dir: str) -> dict[str, float]:
    torch.manual_seed(0)
    net = build_model(arch, num_classes=10)
    blocks = residual_blocks(net)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    labels = torch.randint(0, 10, (args.batch_size,))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    recorder = BranchRatioRecorder(blocks)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(images), labels).backward()
        optimizer.step()

    inside = [0.0]  # CPU seconds spent in the callback's code during the measured steps

    def timed(hook):
        def wrapper(*hook_args):
            start = time.process_time()
            hook(*hook_args)
            inside[0] += time.process_time() - start

        return wrapper

    recorder._input_hook = lambda index, make=recorder._input_hook: timed(make(index))
    recorder._output_hook = lambda store, index, make=recorder._output_hook: timed(make(store, index))
    recorder._block_hook = lambda index, make=recorder._block_hook: timed(make(index))

    def measured_step() -> None:
        recorder.attach()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(images), labels).backward()
        start = time.process_time()
        gradient_statistics(blocks)
        recorder.ratios()
        recorder.detach()
        inside[0] += time.process_time() - start
        optimizer.step()

    for _ in range(args.warmup):
        step()
        measured_step()
    inside[0] = 0.0
    plain = cpu_seconds(step, args.steps)
    for _ in range(args.steps):
        measured_step()
    hooks = inside[0] / args.steps

    # Logging one measurement, through the callback's own code, to a real TensorBoard file.
    logger = TensorBoardLogger(log_dir, name=arch, default_hp_metric=False)
    trainer = SimpleNamespace(loggers=[logger], global_step=0)
    record = {"step": 0, "epoch": 0, **gradient_statistics(blocks), "branch_to_shortcut": [1.0] * len(blocks)}

    def logging(image: bool) -> None:
        callback = TrainingDiagnostics(enabled=True, profile_image=image)
        callback.blocks, callback.path = blocks, f"{log_dir}/{arch}-{image}.jsonl"
        callback.layout = block_layout(blocks)
        callback._log(trainer, record)

    logging(True)  # imports matplotlib once
    log = cpu_seconds(lambda: logging(False), args.log_repeat)
    log_image = cpu_seconds(lambda: logging(True), args.log_repeat)

    off = TrainingDiagnostics()
    off_trainer = SimpleNamespace(is_global_zero=True, global_step=0)

    def off_hooks() -> None:
        for _ in range(1000):
            off.on_train_batch_start(off_trainer, None, None, 0)
            off.on_before_optimizer_step(off_trainer, None, None)
            off.on_train_batch_end(off_trainer, None, None, None, 0)

    off_per_step = statistics.median(cpu_seconds(off_hooks, 5)) / 1000
    logger.experiment.close()
    return {
        "blocks": len(blocks),
        "step": statistics.median(plain),
        "hooks": hooks,
        "log": statistics.median(log),
        "image": statistics.median(log_image) - statistics.median(log),
        "off": off_per_step,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["resnet20", "plain20", "resnet56"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="timed steps of each kind")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each kind first")
    parser.add_argument("--log-repeat", type=int, default=10, help="timed loggings of one measurement")
    args = parser.parse_args()
    print(
        f"CPU seconds of this process (median); torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.machine()}; batch {args.batch_size}, {args.image_size}px\n"
    )
    print(
        "| Model | blocks | train step | hooks + norms on a measured step | logging one measurement | "
        "+ profile figure | off, per step | overhead at every_n_steps=100 | with the figure |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as log_dir:
        for arch in args.archs:
            r = measure(arch, args, log_dir)
            extra = r["hooks"]
            overhead = (extra + r["log"]) / (100 * r["step"])
            overhead_image = (extra + r["log"] + r["image"]) / (100 * r["step"])
            print(
                f"| `{arch}` | {r['blocks']} | {r['step'] * 1e3:.0f} ms | {extra * 1e3:.1f} ms "
                f"({extra / r['step']:.2%}) | {r['log'] * 1e3:.1f} ms | {r['image'] * 1e3:.0f} ms | "
                f"{r['off'] * 1e6:.1f} µs | {overhead:.2%} | {overhead_image:.2%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
