"""DataModules: split sizes, shapes, augmentation on train only, determinism, clear errors."""

from __future__ import annotations

from urllib.error import URLError

import pytest
import torch
from torchvision import datasets

from src.data import CIFARDataModule, DatasetNotFoundError, SyntheticDataModule


# ---------------------------------------------------------------- CIFAR
@pytest.mark.parametrize("dataset, num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_splits_shapes_and_classes(fake_cifar, dataset, num_classes):
    root = fake_cifar(dataset, train_per_file=60, test_size=50)  # 300 training images
    dm = CIFARDataModule(dataset, data_dir=str(root), download=False, val_size=40, batch_size=16, num_workers=0)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (260, 40, 50)
    assert dm.num_classes == num_classes and dm.input_shape == (3, 32, 32)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and int(labels.max()) < num_classes


def test_cifar_split_is_deterministic_and_disjoint(fake_cifar):
    root = fake_cifar()
    first = CIFARDataModule(data_dir=str(root), download=False, val_size=40, split_seed=3)
    second = CIFARDataModule(data_dir=str(root), download=False, val_size=40, split_seed=3)
    other = CIFARDataModule(data_dir=str(root), download=False, val_size=40, split_seed=4)
    train, val = first.split_indices(300)
    assert (train, val) == second.split_indices(300)
    assert val != other.split_indices(300)[1]
    assert not set(train) & set(val) and len(set(train) | set(val)) == 300


def test_cifar_augments_train_only_and_normalises(fake_cifar):
    root = fake_cifar()
    dm = CIFARDataModule(data_dir=str(root), download=False, val_size=40, num_workers=0)
    dm.setup()
    torch.manual_seed(0)
    train_views = torch.stack([dm.train_set[0][0] for _ in range(8)])
    val_views = torch.stack([dm.val_set[0][0] for _ in range(8)])
    test_views = torch.stack([dm.test_set[0][0] for _ in range(8)])
    assert not all(torch.equal(train_views[0], view) for view in train_views[1:])  # random crop / flip
    assert all(torch.equal(val_views[0], view) for view in val_views)
    assert all(torch.equal(test_views[0], view) for view in test_views)
    # Same underlying image: the un-augmented view equals (x / 255 - mean) / std.
    raw = datasets.CIFAR10(str(root), train=False).data[0]  # H, W, C uint8
    mean, std = torch.tensor(dm.info["mean"]), torch.tensor(dm.info["std"])
    expected = (torch.from_numpy(raw).permute(2, 0, 1).float() / 255 - mean[:, None, None]) / std[:, None, None]
    assert torch.allclose(test_views[0], expected, atol=1e-5)


def test_cifar_paper_mode_trains_on_everything_minus_the_per_pixel_mean(fake_cifar):
    """val_size 0 + normalize pixel: all 300 training images, no val loader, x - mean image, mean-coloured padding."""
    root = fake_cifar()
    dm = CIFARDataModule(data_dir=str(root), download=False, val_size=0, normalize="pixel", batch_size=300,
                         num_workers=0, augment=False)  # fmt: skip
    assert dm.fast is False  # the fast path does not implement the per-pixel mean
    dm.setup("fit")
    assert len(dm.train_set) == 300 and dm.val_set is None and dm.val_dataloader() == []
    raw = datasets.CIFAR10(str(root), train=True).data  # N x 32 x 32 x 3 uint8
    expected = torch.from_numpy(raw).permute(0, 3, 1, 2).double().mean(0) / 255
    assert torch.allclose(dm.mean_image.double(), expected, atol=1e-6)
    images, _ = next(iter(dm.train_dataloader()))
    assert images.mean(0).abs().max() < 1e-5  # every pixel of the training set averages to zero
    augmented = CIFARDataModule(data_dir=str(root), download=False, val_size=0, normalize="pixel", num_workers=0)
    augmented.setup("fit")
    # A crop shifted by 4 px shows 4 columns or rows of padding: zeros, i.e. the mean image's value.
    crops = torch.stack([augmented.train_set[0][0] for _ in range(40)])
    assert (crops == 0).all(dim=(1, 2)).any()
    with pytest.raises(ValueError, match="fast path does not"):
        CIFARDataModule(data_dir=str(root), download=False, normalize="pixel", fast=True)


def test_cifar_missing_data_without_download_names_folder(tmp_path):
    dm = CIFARDataModule(data_dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DatasetNotFoundError) as error:
        dm.setup("fit")
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in message
    assert "cifar-10-python.tar.gz" in message and "download" in message


def test_cifar_offline_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets.cifar, "download_and_extract_archive", no_network)
    dm = CIFARDataModule("cifar100", data_dir=str(tmp_path), download=True)
    with pytest.raises(DatasetNotFoundError) as error:
        dm.prepare_data()
    message = str(error.value)
    assert str(tmp_path / "cifar-100-python") in message
    assert "could not be downloaded" in message and "cifar-100-python.tar.gz" in message
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_cifar_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="dataset must be one of"):
        CIFARDataModule("cifar1000", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="val_size must be >= 0"):
        CIFARDataModule(data_dir=str(tmp_path), val_size=-1)
    with pytest.raises(ValueError, match="normalize must be"):
        CIFARDataModule(data_dir=str(tmp_path), normalize="image")
    with pytest.raises(ValueError, match="smaller than the training set"):
        CIFARDataModule(data_dir=str(tmp_path), val_size=300).split_indices(300)


# ---------------------------------------------------------------- synthetic
def test_synthetic_shapes_sizes_and_determinism():
    dm = SyntheticDataModule(num_classes=4, image_size=16, in_channels=1, train_size=64, val_size=32, test_size=16)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (64, 32, 16)
    assert dm.input_shape == (1, 16, 16) and dm.in_channels == 1
    images, labels = dm.train_set.tensors
    assert images.shape == (64, 1, 16, 16) and set(labels.tolist()) <= {0, 1, 2, 3}
    again = SyntheticDataModule(num_classes=4, image_size=16, in_channels=1, train_size=64, val_size=32, test_size=16)
    again.setup()
    assert torch.equal(again.train_set.tensors[0], images)
    other = SyntheticDataModule(num_classes=4, image_size=16, in_channels=1, train_size=64, seed=1)
    other.setup()
    assert not torch.equal(other.train_set.tensors[0], images)


def test_synthetic_data_is_learnable_but_not_trivial():
    """A nearest-class-mean classifier beats chance by far, yet noise keeps single pixels uninformative."""
    dm = SyntheticDataModule(num_classes=10, train_size=2000, val_size=500, test_size=10, max_shift=0)
    dm.setup()
    train_x, train_y = dm.train_set.tensors
    val_x, val_y = dm.val_set.tensors
    means = torch.stack([train_x[train_y == c].mean(0) for c in range(10)]).flatten(1)
    predictions = torch.cdist(val_x.flatten(1), means).argmin(1)
    accuracy = (predictions == val_y).float().mean().item()
    assert accuracy > 0.5  # class structure is there
    pixel_snr = train_x.std(0).mean() / dm.noise
    assert pixel_snr < 1.5  # noise dominates each pixel


def test_synthetic_val_and_test_do_not_depend_on_train_size():
    small, large = SyntheticDataModule(train_size=10), SyntheticDataModule(train_size=500)
    small.setup(), large.setup()
    assert torch.equal(small.val_set.tensors[0], large.val_set.tensors[0])
    assert torch.equal(small.test_set.tensors[1], large.test_set.tensors[1])


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticDataModule(num_classes=1)
    with pytest.raises(ValueError, match="at least one sample"):
        SyntheticDataModule(val_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        SyntheticDataModule(batch_size=0)


def test_paper_faithful_overlay_trains_on_all_images_and_tests_the_final_model(fake_cifar, tmp_path, monkeypatch):
    """configs/cifar10/paper_faithful.yaml through the CLI: no validation at all, the last checkpoint tested."""
    import json

    from src.cli import main
    from tests.conftest import REPO_ROOT

    root = fake_cifar(train_per_file=20, test_size=30)  # 100 training images
    monkeypatch.chdir(tmp_path)
    configs = REPO_ROOT / "configs" / "cifar10"
    args = ["fit", "--config", str(configs / "resnet20.yaml"), "--config", str(configs / "paper_faithful.yaml")]
    args += ["--model.arch", "resnet8", "--trainer.max_steps", "8", "--trainer.enable_progress_bar", "false"]
    args += ["--data.init_args.data_dir", str(root), "--data.init_args.download", "false", "--run_dir", "run"]
    args += ["--data.init_args.batch_size", "25", "--data.init_args.num_workers", "0"]
    main(args)
    report = json.loads((tmp_path / "run" / "efficiency.json").read_text())
    assert report["global_step"] == 8 and report["best_val_acc"] is None  # 4 steps per epoch over all 100 images
    assert report["test_samples"] == 30 and report["test_acc"] is not None
    assert report["test_ckpt_path"].endswith("step8.ckpt")
