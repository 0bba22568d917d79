"""The fast CIFAR-10 recipe on the JPEG folder, timed from process start to the final test.

Runs ``configs/cifar10/resnet20_fast.yaml`` through the project's CLI with the data swapped for a
JPEG folder on the fast path (``src.data.fast``): the folder is decoded once into a uint8 cache
(``<root>/../.fast_cache`` by default; the first run pays for decoding, later runs load the file),
split 45k/5k with the CIFAR split seed, trained on the 45k and tested on the 5k held out -- what
``configs/cifar10_folder/resnet20_fast.yaml`` does once the folder DataModule exists.

    python -m benchmarks.fast_recipe --root data/cifar10/train     # python -m src.data.export cifar10 data/cifar10
    python -m benchmarks.fast_recipe --root data/cifar10/train --trainer.max_epochs 12

Extra arguments go to the CLI unchanged. Prints one JSON line: wall seconds, accuracy, throughput.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

START = time.perf_counter()  # before the heavy imports: what a user waits for

import torch  # noqa: E402
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset  # noqa: E402

from src.data.base import ImageClassificationDataModule  # noqa: E402
from src.data.cifar import CIFAR_INFO  # noqa: E402
from src.data.fast import FastLoaderMixin, fast_split, load_or_decode, resident_device  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def folder_samples(root: str) -> tuple[list[tuple[str, int]], list[str]]:
    """``(path, label)`` in ImageFolder order, and the class names."""
    classes, class_to_idx = find_classes(root)
    return make_dataset(root, class_to_idx, extensions=IMG_EXTENSIONS), classes


class JpegFolderFast(FastLoaderMixin, ImageClassificationDataModule):
    """A small-image folder on the fast path: train / held-out val (also used as test), CIFAR-10 statistics.

    A stop-gap for this benchmark; the project's ``ImageFolderDataModule`` gets the same fast path via
    ``FastLoaderMixin`` + ``fast_split``.
    """

    def __init__(
        self,
        root: str = "data/cifar10/train",
        cache_dir: str | None = None,
        val_size: int = 5000,
        split_seed: int = 0,
        batch_size: int = 256,
        limit: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers=0, pin_memory=False)
        self.root, self.val_size, self.split_seed, self.limit = root, val_size, split_seed, limit
        self.cache_dir = cache_dir or str(Path(root).resolve().parent / ".fast_cache")
        self.samples, classes = folder_samples(root)
        self.num_classes, self.input_shape = len(classes), (3, 32, 32)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images = load_or_decode(self.samples, self.cache_dir, name=Path(self.root).name)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        train, val = order[self.val_size :], order[: self.val_size]
        if self.limit:
            train = train[: self.limit]
        info = CIFAR_INFO["cifar10"]
        options = dict(mean=info["mean"], std=info["std"], device=resident_device(self))
        self.train_set = fast_split(images.subset(train), train=True, **options)
        self.val_set = self.test_set = fast_split(images.subset(val), train=False, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/cifar10/train", help="class folders of CIFAR-10 training images")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "cifar10" / "resnet20_fast.yaml"))
    parser.add_argument("--limit", type=int, default=None, help="train on this many images only (a quick try)")
    args, cli_args = parser.parse_known_args()
    from src.cli import main as cli_main

    data = {
        "class_path": "benchmarks.fast_recipe.JpegFolderFast",
        "init_args": {"root": args.root, "cache_dir": args.cache_dir, "limit": args.limit},
    }
    cli = cli_main(["fit", "--config", args.config, "--data", json.dumps(data), *cli_args])
    report = json.loads(Path(_report(cli)).read_text())
    print(
        json.dumps(
            {
                "wall_seconds": round(time.perf_counter() - START, 1),
                "epochs": cli.trainer.current_epoch,
                "best_val_acc": report["best_val_acc"],
                "test_acc_on_heldout_5k": report["test_acc"],
                "train_images_per_sec": report["train_images_per_sec"],
                "run_dir": cli.trainer.log_dir,
            }
        )
    )


def _report(cli) -> str:
    from src.callbacks import ParameterEfficiency

    callback = next(c for c in cli.trainer.callbacks if isinstance(c, ParameterEfficiency))
    return callback.path


if __name__ == "__main__":
    main()
