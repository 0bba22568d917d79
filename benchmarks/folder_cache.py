"""Build time and peak memory of the folder fast path's setup on a synthetic N-image folder (issue 16, item 3).

    python benchmarks/folder_cache.py --images 100000            # the issue's size (64 px JPEGs, 100 classes)
    python benchmarks/folder_cache.py --images 20000 --processes 2   # two processes of one node at once

Writes ``--root`` (once; reused when it holds the right number of images), then runs
``ImageFolderDataModule(..., fast=True).setup("fit")`` -- file check, statistics and the decoded cache of
the train and val splits -- with a fresh cache folder in ``--processes`` separate processes started
together, as the DDP processes of one node do. Each reports its wall time, its peak RSS, the peak RSS
of its largest decoding worker and whether it built the cache. With ``--old`` it also times the version-1
way (decode into a list, ``torch.stack``, ``torch.save``) in one process, for the peak-memory comparison.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHILD = "--child"


def write_class(args: tuple[str, int, int, int]) -> None:
    """One class folder of smooth random 64-px JPEGs (noise alone would compress unlike photos)."""
    folder, label, count, size = args
    rng = np.random.default_rng(label)
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
        image.save(os.path.join(folder, f"{index:06d}.jpg"), quality=90)


def make_folder(root: Path, images: int, classes: int, size: int, workers: int) -> None:
    if root.exists() and sum(1 for _ in root.glob("train/*/*.jpg")) == images:
        print(f"reusing {root} ({images:,} images)", flush=True)
        return
    shutil.rmtree(root, ignore_errors=True)
    start = time.monotonic()
    per_class = [images // classes + (c < images % classes) for c in range(classes)]
    jobs = [(str(root / "train" / f"c{c:03d}"), c, n, size) for c, n in enumerate(per_class)]
    with multiprocessing.Pool(max(1, workers)) as pool:
        pool.map(write_class, jobs)
    print(f"wrote {images:,} {size}-px JPEGs into {root} in {time.monotonic() - start:.0f} s", flush=True)


def peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def rss_now_mb() -> float:
    """This process's resident memory now (Python, torch and Lightning imported: the baseline of the peak)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def child(root: str, cache: str, size: int, workers: int) -> None:
    """One process's setup (as one DDP rank's): prints a JSON line of what it measured."""
    from src.data import ImageFolderDataModule, image_cache

    built = []
    real_build = image_cache.build_cache

    def counting_build(*args, **kwargs):
        built.append(args[1].name)
        return real_build(*args, **kwargs)

    image_cache.build_cache = counting_build
    baseline = rss_now_mb()
    start = time.monotonic()
    data = ImageFolderDataModule(root=root, image_size=size, preset="cifar", fast=True, cache_dir=cache,
                                 num_workers=workers, val_split=0.1)  # fmt: skip
    data.setup("fit")
    seconds = time.monotonic() - start
    result = dict(
        seconds=round(seconds, 1),
        rss_before_setup_mb=round(baseline),
        peak_rss_mb=round(peak_rss_mb(resource.RUSAGE_SELF)),
        largest_worker_peak_rss_mb=round(peak_rss_mb(resource.RUSAGE_CHILDREN)),
        built=built,
        train=len(data.train_set),
        val=len(data.val_set),
    )
    print("RESULT " + json.dumps(result), flush=True)


def old_way(root: str, size: int) -> None:
    """Version 1 of the fast path, for comparison: one thread, a list of tensors, torch.stack, torch.save."""
    import torch

    from src.data.decode import decode
    from src.data.folder_listing import find_images

    paths = find_images(os.path.join(root, "train"))
    baseline = rss_now_mb()
    start = time.monotonic()
    images = [decode(path, 3, size) for path in paths]
    stacked = torch.stack(images)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"images": stacked, "labels": torch.zeros(len(paths))}, os.path.join(tmp, "old.pt"))
    seconds = time.monotonic() - start
    result = dict(
        seconds=round(seconds, 1), rss_before_mb=round(baseline), peak_rss_mb=round(peak_rss_mb(resource.RUSAGE_SELF))
    )
    print("RESULT " + json.dumps(result), flush=True)


def run_children(args: argparse.Namespace, cache: Path) -> list[dict]:
    command = [sys.executable, __file__, CHILD, str(args.root), str(cache), str(args.size), str(args.workers)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(args.processes)]
    results = []
    for rank, process in enumerate(started):
        out, _ = process.communicate()
        if process.returncode:
            raise SystemExit(f"process {rank} failed ({process.returncode}):\n{out[-3000:]}")
        lines = out.splitlines()
        print("\n".join(f"[{rank}] {line}" for line in lines if not line.startswith("RESULT ")), flush=True)
        results.append(json.loads(next(line for line in lines if line.startswith("RESULT "))[len("RESULT ") :]))
    return results


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        return child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    if len(sys.argv) > 1 and sys.argv[1] == "--old-child":
        return old_way(sys.argv[2], int(sys.argv[3]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000, help="images in the synthetic folder")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--size", type=int, default=64, help="side of the square JPEGs, and the image_size")
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "folder_cache_bench")
    parser.add_argument("--processes", type=int, default=1, help="processes of one node doing setup at once")
    parser.add_argument(
        "--workers",
        type=int,
        default=max(0, len(os.sched_getaffinity(0)) - 1),
        help="decoding processes of the process that builds (the data module's num_workers)",
    )
    parser.add_argument("--old", action="store_true", help="also time version 1 (list + stack + torch.save)")
    args = parser.parse_args()
    make_folder(args.root, args.images, args.classes, args.size, max(1, args.workers))
    cache = args.root.parent / f"{args.root.name}-cache"
    shutil.rmtree(cache, ignore_errors=True)
    results = run_children(args, cache)
    builders = [rank for rank, result in enumerate(results) if result["built"]]
    cache_mb = sum(p.stat().st_size for p in cache.glob("*.uint8")) / 1e6
    summary = dict(images=args.images, size=args.size, processes=results, cache_mb=round(cache_mb, 1))
    print(json.dumps(summary, indent=1))
    print(f"built by process(es) {builders}: {'once' if len(builders) == 1 else 'NOT once'}")
    if args.old:
        out = subprocess.run([sys.executable, __file__, "--old-child", str(args.root), str(args.size)],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        print("version 1:", next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


if __name__ == "__main__":
    main()
