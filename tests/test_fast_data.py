"""The fast data path: same augmentation distribution as the PIL path, an exact and fresh cache, DDP shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from src.data import CIFARDataModule, image_cache
from src.data import fast as fast_module
from src.data.fast import BatchAugment, FastImageDataset, Uint8Images, fast_loader, fast_split, load_or_decode
from tests.conftest import REPO_ROOT

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


# ---------------------------------------------------------------- augmentation statistics
def position_image(size: int = 32) -> torch.Tensor:
    """3 x H x W uint8 whose pixel (y, x) holds (y + 1, x + 1, 255): a crop + flip can be read back from it."""
    rows = torch.arange(1, size + 1, dtype=torch.uint8)[:, None].expand(size, size)
    cols = torch.arange(1, size + 1, dtype=torch.uint8)[None, :].expand(size, size)
    return torch.stack([rows, cols, torch.full((size, size), 255, dtype=torch.uint8)])


def read_crop(view: torch.Tensor) -> tuple[int, int, bool]:
    """(top, left) offset in the 4-padded image and flip, from an augmented ``position_image`` (uint8)."""
    valid = view[2] == 255  # padding is 0 in every channel
    ys, xs = torch.nonzero(valid, as_tuple=True)
    y0, x0 = int(ys.min()), int(xs.min())  # first valid pixel; the valid region is at least 28 wide
    row, col, next_col = int(view[0, y0, x0]), int(view[1, y0, x0]), int(view[1, y0, x0 + 1])
    flipped = next_col < col
    top = row + 3 - y0  # view row i shows image row top + i - 4, which holds the value top + i - 3
    left = col + 3 - (31 - x0) if flipped else col + 3 - x0
    return top, left, flipped


def test_crop_offsets_and_flips_have_the_pil_distribution():
    image = position_image()
    count = 81 * 100
    # Fast path: one batch of the same image.
    views, offsets, flips = BatchAugment(MEAN, STD).crop_and_flip(
        image.expand(count, -1, -1, -1), generator=torch.Generator().manual_seed(0)
    )
    fast = [read_crop(view) for view in views]
    assert [[top, left] for top, left, _ in fast] == offsets.tolist()  # the reading is right
    assert [flip for _, _, flip in fast] == flips.tolist()
    # PIL path: torchvision's per-sample transforms on the PIL image.
    torch.manual_seed(0)
    pil_transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), v2.PILToTensor()])
    pil_image = Image.fromarray(image.permute(1, 2, 0).numpy())
    pil = [read_crop(pil_transform(pil_image)) for _ in range(count // 4)]
    for name, draws, expected in (("fast", fast, count / 81), ("pil", pil, count / 4 / 81)):
        cells = Counter((top, left) for top, left, _ in draws)
        assert sorted(cells) == [(y, x) for y in range(9) for x in range(9)], name  # every offset, nothing else
        # Uniform: every cell within 5 standard deviations of its expected count.
        assert all(abs(n - expected) < 5 * expected**0.5 for n in cells.values()), (name, cells)
        flip_rate = sum(flip for _, _, flip in draws) / len(draws)
        assert abs(flip_rate - 0.5) < 5 * (0.25 / len(draws)) ** 0.5, (name, flip_rate)


def test_each_view_is_exactly_a_padded_crop_and_flip():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    views, offsets, flips = BatchAugment(MEAN, STD).crop_and_flip(images, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for image, view, (top, left), flip in zip(padded, views, offsets.tolist(), flips.tolist()):
        expected = image[:, top : top + 32, left : left + 32]
        assert torch.equal(view, expected.flip(-1) if flip else expected)


def test_eval_normalisation_equals_the_pil_path():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    fast = BatchAugment(MEAN, STD)(images, train=False)
    pil_eval = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    reference = torch.stack([pil_eval(Image.fromarray(image.permute(1, 2, 0).numpy())) for image in images])
    assert fast.dtype == torch.float32 and torch.allclose(fast, reference, atol=1e-5)
    assert BatchAugment(MEAN, STD, channels_last=True)(images).is_contiguous(memory_format=torch.channels_last)


def test_no_augmentation_when_disabled():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    augment = BatchAugment(MEAN, STD, padding=0, flip_p=0.0)
    assert torch.equal(augment(images, train=True), augment(images, train=False))


# ---------------------------------------------------------------- decode-once cache
def write_jpeg_folder(root: Path, per_class: int = 4, classes: tuple[str, ...] = ("cat", "dog", "frog")) -> list:
    """A tiny ImageFolder of 32x32 JPEGs; returns its (path, label) samples in ImageFolder order."""
    rng = np.random.default_rng(0)
    samples = []
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            path = root / name / f"{index:04d}.jpg"
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path, quality=90)
            samples.append((str(path), label))
    return samples


def cache_files(folder: Path) -> list[Path]:
    """The cache files in ``folder``, without its hidden lock file."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def pil_decode(path: str) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def test_cache_holds_exactly_the_data_set_and_is_reused(tmp_path, monkeypatch):
    samples = write_jpeg_folder(tmp_path / "train")
    data = load_or_decode(samples, tmp_path / "cache", name="train")
    assert data.images.shape == (12, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == [label for _, label in samples]
    for (path, _), image in zip(samples, data.images):
        assert torch.equal(image, pil_decode(path))
    cached = cache_files(tmp_path / "cache")
    assert len(cached) == 1 and cached[0].name.startswith("train-") and cached[0].suffix == ".uint8"

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(image_cache, "build_cache", no_decoding)
    monkeypatch.setattr(image_cache, "decode_to_memory", no_decoding)
    again = load_or_decode(samples, tmp_path / "cache", name="train")
    assert torch.equal(again.images, data.images) and torch.equal(again.labels, data.labels)


def test_cache_is_rebuilt_when_the_folder_changes(tmp_path):
    samples = write_jpeg_folder(tmp_path / "train")
    first = load_or_decode(samples, tmp_path / "cache")
    # Replace one image (new content, new size and mtime) and add one.
    changed_path = samples[0][0]
    Image.new("RGB", (32, 32), (10, 200, 30)).save(changed_path, quality=95)
    os.utime(changed_path, ns=(os.stat(changed_path).st_atime_ns, os.stat(changed_path).st_mtime_ns + 10**9))
    extra = tmp_path / "train" / "cat" / "0099.jpg"
    Image.new("RGB", (32, 32), (0, 0, 255)).save(extra)
    samples = samples + [(str(extra), 0)]
    second = load_or_decode(samples, tmp_path / "cache")
    assert len(second) == 13 and second.labels[-1] == 0
    assert torch.equal(second.images[0], pil_decode(changed_path))
    assert not torch.equal(second.images[0], first.images[0])
    assert len(cache_files(tmp_path / "cache")) == 2  # the old cache is kept, not overwritten
    # Other decode settings are another cache entry too.
    grey = load_or_decode(samples, tmp_path / "cache", channels=1, size=16)
    assert grey.images.shape == (13, 1, 16, 16)
    assert len(cache_files(tmp_path / "cache")) == 3


def test_mixed_formats_and_sizes(tmp_path):
    samples = write_jpeg_folder(tmp_path / "train", per_class=1)
    png = tmp_path / "train" / "cat" / "big.png"
    Image.fromarray(np.full((48, 40, 3), 7, dtype=np.uint8)).save(png)
    samples.append((str(png), 0))
    with pytest.raises(ValueError, match="different sizes"):
        load_or_decode(samples, None)
    resized = load_or_decode(samples, None, size=32)
    assert resized.images.shape == (4, 3, 32, 32) and int(resized.images[-1].float().mean().round()) == 7


def test_fast_split_from_files_yields_normalised_batches(tmp_path):
    samples = write_jpeg_folder(tmp_path / "train")
    dataset = fast_split(samples, MEAN, STD, train=False, cache_dir=tmp_path / "cache", name="val")
    images, labels = next(iter(fast_loader(dataset, batch_size=5, shuffle=False)))
    expected = (pil_decode(samples[0][0]).float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[
        :, None, None
    ]
    assert images.shape == (5, 3, 32, 32) and labels.tolist() == [0, 0, 0, 0, 1]
    assert torch.allclose(images[0], expected, atol=1e-5)
    threads = torch.get_num_threads()
    assert [len(batch[1]) for batch in fast_loader(dataset, batch_size=5, shuffle=True)] == [5, 5, 2]
    assert torch.get_num_threads() == threads  # batches are made on one thread, the model keeps them all


def test_folder_integration_mixin_trains_from_a_jpeg_folder(tmp_path):
    """What the folder DataModule gets: FastLoaderMixin + fast_split over its (path, label) lists."""
    from src.data.base import ImageClassificationDataModule
    from src.data.fast import FastLoaderMixin, resident_device
    from src.modules import ImageClassifier
    from tests.helpers import tiny_trainer

    samples = write_jpeg_folder(tmp_path / "train", per_class=8)

    class FolderData(FastLoaderMixin, ImageClassificationDataModule):
        def __init__(self) -> None:
            super().__init__(batch_size=8, num_workers=0, pin_memory=False)
            self.num_classes, self.input_shape = 3, (3, 32, 32)

        def setup(self, stage: str) -> None:
            options = dict(mean=MEAN, std=STD, cache_dir=tmp_path / "cache", device=resident_device(self))
            self.train_set = fast_split(samples[::2], train=True, name="train", **options)
            self.val_set = fast_split(samples[1::2], train=False, name="val", **options)

    data = FolderData()
    trainer = tiny_trainer(tmp_path, max_epochs=2)
    trainer.fit(ImageClassifier("resnet8", num_classes=3), data)
    assert trainer.global_step == 2 * 2  # 12 training images in batches of 8, two epochs
    assert sorted(p.name.split("-")[0] for p in cache_files(tmp_path / "cache")) == ["train", "val"]
    assert isinstance(trainer.train_dataloader.dataset, FastImageDataset)


# ---------------------------------------------------------------- CIFAR on the fast path
def test_cifar_fast_path_has_the_pil_paths_splits_and_values(fake_cifar):
    root = fake_cifar()
    options = dict(data_dir=str(root), download=False, val_size=40, batch_size=32, num_workers=0)
    fast, pil = CIFARDataModule(**options), CIFARDataModule(**options, fast=False)
    fast.setup(), pil.setup()
    assert isinstance(fast.train_set, FastImageDataset) and fast.fast and not pil.fast
    assert (len(fast.train_set), len(fast.val_set), len(fast.test_set)) == (260, 40, 50)
    val_images, val_labels = next(iter(fast.val_dataloader()))
    pil_images, pil_labels = next(iter(pil.val_dataloader()))
    assert torch.equal(val_labels, pil_labels) and torch.allclose(val_images, pil_images, atol=1e-5)
    train_images, train_labels = next(iter(fast.train_dataloader()))
    assert train_images.shape == (32, 3, 32, 32) and train_images.dtype == torch.float32
    seen = torch.cat([labels for _, labels in fast.train_dataloader()])
    assert sorted(seen.tolist()) == sorted(fast.train_set.data.labels.tolist())  # each sample once per epoch


def test_fast_recipe_trains_end_to_end_through_the_cli(fake_cifar, tmp_path, monkeypatch):
    from src.cli import main

    root = fake_cifar(train_per_file=40, test_size=30)  # 200 training images
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(REPO_ROOT / "configs" / "cifar10" / "resnet20_fast.yaml")]
    args += ["--model.arch", "resnet8", "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"]
    args += ["--data.init_args.data_dir", str(root), "--data.init_args.download", "false"]
    args += ["--data.init_args.val_size", "40", "--data.init_args.batch_size", "32"]
    args += ["--model.lr_scheduler.init_args.warmup_steps", "2"]
    main(args)
    run_dir = next((tmp_path / "lightning_logs").glob("*/version_0"))
    report = json.loads((run_dir / "efficiency.json").read_text())
    assert report["global_step"] == 10  # 160 images / 32 per batch x 2 epochs
    assert report["test_acc"] is not None and report["best_val_acc"] is not None
    assert report["train_images_per_sec"] > 0 and report["input_shape"] == [3, 32, 32]


# ---------------------------------------------------------------- DDP: one shard per process, once per epoch
DDP_SAMPLES, DDP_BATCH = 96, 16


def ddp_run(out_dir: str) -> None:
    """Two CPU processes (gloo) on an indexed data set; each rank writes the sample ids it trained on."""
    import lightning.pytorch as pl

    from src.data.base import ImageClassificationDataModule
    from src.data.fast import FastLoaderMixin
    from tests.helpers import tiny_trainer

    class IndexedData(FastLoaderMixin, ImageClassificationDataModule):
        def __init__(self) -> None:
            super().__init__(batch_size=DDP_BATCH, num_workers=0, pin_memory=False)
            self.num_classes, self.input_shape = 2, (3, 4, 4)

        def setup(self, stage: str) -> None:
            ids = torch.arange(DDP_SAMPLES)
            images = torch.zeros(DDP_SAMPLES, 3, 4, 4, dtype=torch.uint8)
            images[:, 0, 0, 0], images[:, 0, 0, 1] = ids // 256, ids % 256  # the id, readable after normalising
            self.train_set = fast_split(Uint8Images(images, ids % 2), (0, 0, 0), (1, 1, 1), True, padding=0, flip_p=0)

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(48, 2)
            self.seen: dict[int, list[int]] = {}

        def training_step(self, batch, batch_idx):
            images, labels = batch
            ids = (images[:, 0, 0, 0] * 255).round().long() * 256 + (images[:, 0, 0, 1] * 255).round().long()
            self.seen.setdefault(self.current_epoch, []).extend(ids.tolist())
            return torch.nn.functional.cross_entropy(self.layer(images.flatten(1)), labels)

        def on_train_end(self) -> None:
            Path(out_dir, f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    pl.seed_everything(0)
    trainer = tiny_trainer(out_dir, devices=2, strategy="ddp", max_epochs=2)
    try:
        trainer.fit(Recorder(), IndexedData())
    finally:  # as src.cli does: gloo's threads left to interpreter exit can abort it ("terminate called ...")
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_ddp_each_process_sees_its_own_shard_once_per_epoch(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "tests.test_fast_data", str(tmp_path)]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for epoch in ("0", "1"):
        first, second = ranks[0][epoch], ranks[1][epoch]
        assert len(first) == len(second) == DDP_SAMPLES // 2
        assert sorted(first + second) == list(range(DDP_SAMPLES))  # every sample exactly once, shards disjoint
    assert ranks[0]["0"] != ranks[0]["1"]  # reshuffled between epochs


if __name__ == "__main__":
    ddp_run(sys.argv[1])


# ---------------------------------------------------------------- one image, one tensor, whichever path
ODD_IMAGES = {  # name: (PIL mode written, (width, height))
    "wide.png": ("RGB", (24, 12)),  # non-square: shorter side to 16, centre crop (was squashed)
    "tall.jpg": ("RGB", (10, 30)),  # upscaled and cropped
    "old.bmp": ("RGB", (16, 20)),  # torchvision.io cannot read BMP: PIL's turn
    "scan.tiff": ("RGB", (20, 16)),
    "raw.ppm": ("RGB", (18, 18)),
    "deep.png": ("I;16", (20, 20)),  # 16-bit grey, scaled to 8 bits
    "print.jpg": ("CMYK", (17, 23)),
    "palette.png": ("P", (16, 24)),
    "grey.png": ("L", (21, 16)),  # one channel, into an RGB run
    "square.jpg": ("RGB", (16, 16)),  # already the target size: untouched
}


def test_fast_and_per_sample_paths_give_the_same_eval_tensors(tmp_path):
    """The same odd files through ``fast: true`` and ``fast: false``: the same uint8 pixels, the same inputs."""
    from src.data import ImageFolderDataModule
    from src.data.decode import load_image
    from src.data.transforms import evaluation
    from tests.image_trees import write_image

    root = tmp_path / "odd"
    for split in ("train", "val"):
        for label in ("a", "b"):
            for seed, (name, (mode, size)) in enumerate(ODD_IMAGES.items()):
                write_image(root / split / label / name, size=size, mode=mode, seed=seed + 100 * (label == "b"))
    options = dict(root=str(root), image_size=16, preset="cifar", mean=list(MEAN), std=list(STD), num_workers=0,
                   batch_size=4, cache_dir=str(tmp_path / "cache"))  # fmt: skip
    fast, per_sample = ImageFolderDataModule(**options, fast=True), ImageFolderDataModule(**options, fast=False)
    fast.setup("fit"), per_sample.setup("fit")
    assert fast.samples["val"] == per_sample.samples["val"] and len(fast.samples["val"]) == 2 * len(ODD_IMAGES)
    geometry = v2.Compose(evaluation("cifar", 16))
    for index, (path, label) in enumerate(per_sample.samples["val"]):
        expected = geometry(load_image(path, 3))  # the per-sample path's eval pixels, before the float conversion
        assert torch.equal(fast.val_set.data.images[index], expected), path  # exact, uint8
        image, fast_label = fast.val_set[index]
        reference, reference_label = per_sample.val_set[index]
        assert int(fast_label) == reference_label == label
        # Exact but for float32 rounding: x * (1 / (255 std)) - mean / std versus (x / 255 - mean) / std.
        assert torch.allclose(image, reference, atol=1e-5, rtol=0), path
    # What the old squash made of the wide image differs: the crop is the centre square, not the whole width.
    wide = [i for i, (path, _) in enumerate(fast.samples["val"]) if path.endswith("a/wide.png")][0]
    squashed = v2.functional.resize(load_image(fast.samples["val"][wide][0], 3), [16, 16], antialias=True)
    assert not torch.equal(fast.val_set.data.images[wide], squashed)


def test_square_images_at_the_target_size_decode_bit_identically_to_the_first_cache_version(tmp_path):
    """A study trained on version-1 caches of square 32-px JPEGs (CIFAR's files) sees the same tensors now."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    samples = write_jpeg_folder(tmp_path / "train")
    raw = [read_file(path) for path, _ in samples]
    version1 = torch.stack([v2.functional.resize(image, [32, 32], antialias=True)
                            for image in decode_jpeg(raw, mode=ImageReadMode.RGB)])  # fmt: skip
    for size in (32, None):
        assert torch.equal(fast_module.decode_files(samples, 3, size).images, version1)
    # The cache key carries the version: a cache written by version 1 is never read as a version-2 one.
    key = fast_module.tensor_cache_key(samples, 3, 32)
    original = fast_module.CACHE_VERSION
    try:
        fast_module.CACHE_VERSION = 1
        assert fast_module.tensor_cache_key(samples, 3, 32) != key
    finally:
        fast_module.CACHE_VERSION = original


def test_a_file_replaced_with_the_same_size_and_mtime_changes_every_cache_key(tmp_path):
    """``cp -p`` / ``rsync -a`` keep a replaced file's mtime: the decoded images, the file check and the statistics
    were served stale (an audit: the fast path returned the old pixels). The ctime, which no tool sets, is keyed."""
    from src.data.folder_cache import file_identities

    samples = write_jpeg_folder(tmp_path / "train")
    path = Path(samples[0][0])
    before = (fast_module.tensor_cache_key(samples, 3, 32), file_identities([p for p, _ in samples]))
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # other bytes, same size
    time.sleep(0.05)  # ctimes are kept at the kernel's clock tick
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # what cp -p does
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert fast_module.tensor_cache_key(samples, 3, 32) != before[0]
    assert file_identities([p for p, _ in samples]) != before[1]


def test_under_ddp_each_process_draws_its_own_crops_and_a_resumed_epoch_the_same(monkeypatch):
    """Every DDP process seeds the same global generators, so the k-th image of each process's batch got the same
    crop and flip (an audit). Each process now draws from (seed, epoch, rank); one process is unchanged."""
    from types import SimpleNamespace

    from src.callbacks.resume import RandomState

    monkeypatch.setenv("PL_GLOBAL_SEED", "7")  # what seed_everything sets in every process
    images = Uint8Images(torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8), torch.arange(32) % 2)

    def batch(rank: int, epoch: int, world_size: int = 2) -> torch.Tensor:
        dataset = FastImageDataset(images, BatchAugment([0.5] * 3, [0.25] * 3), train=True)
        loader = fast_loader(dataset, batch_size=32, shuffle=False)
        trainer = SimpleNamespace(world_size=world_size, global_rank=rank, current_epoch=epoch, train_dataloader=loader)
        RandomState().on_train_epoch_start(trainer, None)  # type: ignore[arg-type]
        return next(iter(loader))[0]

    torch.manual_seed(7)
    first = batch(rank=0, epoch=3)
    torch.manual_seed(7)
    assert not torch.equal(batch(rank=1, epoch=3), first)  # the same global state, another process: other crops
    torch.manual_seed(123)  # whatever the global state (a resume restores rank zero's): the same draws
    assert torch.equal(batch(rank=0, epoch=3), first)
    assert not torch.equal(batch(rank=0, epoch=4), first)  # and new ones every epoch
    torch.manual_seed(7)
    alone = batch(rank=0, epoch=3, world_size=1)  # one process: the global generator, as before
    torch.manual_seed(7)
    assert torch.equal(batch(rank=0, epoch=3, world_size=1), alone)
    torch.manual_seed(8)
    assert not torch.equal(batch(rank=0, epoch=3, world_size=1), alone)


# ---------------------------------------------------------------- ImageNet scale: once per node, parallel, mapped
def test_cache_is_memory_mapped_and_parallel_decoding_gives_the_same_bytes(tmp_path, capsys):
    samples = write_jpeg_folder(tmp_path / "train", per_class=300)  # 900 images: 4 chunks of 256 or fewer
    serial = fast_module.decode_files(samples, 3, 32, workers=0)
    cached = load_or_decode(samples, tmp_path / "cache", name="train", size=32, workers=2)
    assert torch.equal(cached.images, serial.images) and torch.equal(cached.labels, serial.labels)
    (path,) = cache_files(tmp_path / "cache")
    assert path.stat().st_size == image_cache.HEADER_BYTES + 900 * 3 * 32 * 32 + 900 * 8  # preallocated, exact
    assert str(path) in Path("/proc/self/maps").read_text()  # mapped from the file, not read into memory
    out = capsys.readouterr().out
    assert f"Decoding {path.name}: 900 images, 2.8 MB at 3x32x32, 2 decoding process(es)" in out
    assert f"Decoding {path.name}: 900/900 images (100%)" in out and "done in" in out


BUILD_ONCE = """
import json, sys
from src.data import fast, image_cache
built = []
real_build = image_cache.build_cache
image_cache.build_cache = lambda *args, **kwargs: (built.append(1), real_build(*args, **kwargs))
samples = json.loads(open(sys.argv[1]).read())
data = fast.load_or_decode([tuple(s) for s in samples], sys.argv[2], name="train", size=32)
print(json.dumps({"built": len(built), "sum": int(data.images.sum())}))
"""


def test_two_processes_build_the_cache_once(tmp_path):
    """Two processes (as two DDP ranks of a node) ask for the same cache at once: one decodes, one waits."""
    samples = write_jpeg_folder(tmp_path / "train", per_class=200)
    (tmp_path / "samples.json").write_text(json.dumps(samples))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-c", BUILD_ONCE, str(tmp_path / "samples.json"), str(tmp_path / "cache")]
    ranks = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    results = []
    for rank in ranks:
        out, err = rank.communicate(timeout=300)
        assert rank.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["built"] for r in results) == [0, 1]
    assert results[0]["sum"] == results[1]["sum"] > 0
    assert len(cache_files(tmp_path / "cache")) == 1


def test_fast_path_above_the_memory_budget_is_refused_before_decoding(tmp_path):
    from src.data import DataError, ImageFolderDataModule

    write_jpeg_folder(tmp_path / "data" / "train", per_class=10)
    options = dict(root=str(tmp_path / "data"), num_workers=0, cache_dir=str(tmp_path / "cache"), fast_max_gb=1e-5)
    with pytest.raises(DataError) as error:
        ImageFolderDataModule(**options, fast=True).setup("fit")
    message = str(error.value)
    assert "30 decoded images of 3x32x32 = 0.1 MB in memory, above the budget of 1e-05 GB" in message
    assert "data.fast false" in message and "data.fast_max_gb" in message
    assert not (tmp_path / "cache").exists() or not cache_files(tmp_path / "cache")  # nothing checked or decoded
    per_sample = ImageFolderDataModule(**options, fast=False)  # the way out works with the same budget
    per_sample.setup("fit")
    assert len(per_sample.train_set) == 27
    with pytest.raises(DataError, match="fast_max_gb must be > 0"):
        ImageFolderDataModule(**{**options, "fast_max_gb": 0})
