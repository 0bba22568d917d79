"""ImageFolderDataModule on trees the tests write: modes, bad files, subsets, splits, ILSVRC / Tiny-ImageNet layouts."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest
import torch
import yaml
from PIL import Image
from torchvision.datasets.utils import extract_archive

from src.data import DataError, DatasetNotFoundError, ImageFolderDataModule
from src.data import download as downloads
from src.data.decode import load_image
from src.data.folder_listing import read_class_list
from src.data.splits import stratified_split
from tests.image_trees import write_image, write_tree
from tests.test_cli import cli


def module(root, **overrides) -> ImageFolderDataModule:
    # preset "none": these tests check pixels exactly (the default picks an augmenting preset from the image size).
    options = dict(root=str(root), num_workers=0, batch_size=8, cache_dir=str(root / "cache"), preset="none")
    return ImageFolderDataModule(**{**options, **overrides})


# ---------------------------------------------------------------- decoding
def test_every_mode_and_size_becomes_the_configured_channels(tmp_path):
    root = tmp_path / "data"
    modes = {"L": "png", "P": "png", "CMYK": "jpg", "RGBA": "png", "RGB": "jpg", "I;16": "png"}
    for i, (mode, ext) in enumerate(modes.items()):
        write_image(root / "train" / "a" / f"{i}.{ext}", size=(10 + 3 * i, 7 + 2 * i), mode=mode, seed=i)
        write_image(root / "train" / "b" / f"{i}.{ext}", size=(12, 12), mode=mode, seed=10 + i)
    write_image(root / "train" / "a" / "old.bmp", size=(9, 9))  # not decodable by torchvision.io: PIL's turn
    for channels in (3, 1):
        dm = module(root, in_channels=channels, image_size=8, val_split=2, preset="imagenet", batch_size=64)
        dm.setup("fit")
        assert dm.input_shape == (channels, 8, 8)
        images, labels = next(iter(dm.train_dataloader()))
        assert images.shape == (11, channels, 8, 8) and images.dtype == torch.float32
        assert sorted(labels.tolist()) == [0] * 6 + [1] * 5 or sorted(labels.tolist()) == [0] * 5 + [1] * 6
        for path, _ in dm.samples["train"] + dm.samples["val"]:
            assert load_image(path, channels).shape[0] == channels and load_image(path, channels).dtype == torch.uint8
    # A grey file in an RGB run: three equal channels with its grey values.
    grey = load_image(str(root / "train" / "a" / "0.png"), 3)
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert torch.equal(grey[0], torch.from_numpy(__import__("numpy").array(Image.open(root / "train" / "a" / "0.png"))))


def test_unreadable_files_are_all_listed_before_training_or_skipped(tmp_path):
    root = write_tree(tmp_path / "data", {"train": {"a": 4, "b": 4}})
    (root / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "train" / "b" / "page.png").write_text("<html>404 Not Found</html>")
    (root / "train" / "b" / "notes.txt").write_text("not an image extension: ignored, as ImageFolder does")
    with pytest.raises(DataError) as error:
        module(root).setup("fit")
    message = str(error.value)
    assert "2 of 10 image files cannot be read" in message
    assert str(root / "train" / "a" / "broken.jpg") in message and str(root / "train" / "b" / "page.png") in message
    assert "bad_files: skip" in message

    dm = module(root, bad_files="skip", val_split=2, cache_dir=str(tmp_path / "other-cache"))
    with pytest.warns(UserWarning, match="Leaving out 2 unreadable image files"):
        dm.setup("fit")
    assert len(dm.samples["train"]) + len(dm.samples["val"]) == 8
    assert sorted(dm.skipped) == sorted(
        [str(root / "train" / "a" / "broken.jpg"), str(root / "train" / "b" / "page.png")]
    )
    assert len(list(dm.train_dataloader())) == 1  # a whole epoch decodes without a crash

    write_image(root / "train" / "a" / "broken.jpg")  # fixed in place: the cached check notices
    write_image(root / "train" / "b" / "page.png")
    fixed = module(root, val_split=2)
    fixed.setup("fit")
    assert len(fixed.samples["train"]) + len(fixed.samples["val"]) == 10 and not fixed.skipped


def test_missing_and_empty_folders_and_unknown_classes_are_clear_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist. Put your images there"):
        module(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    write_image(tmp_path / "flat" / "x.png")
    with pytest.raises(DatasetNotFoundError, match="has no 'train' folder"):
        module(tmp_path / "flat")

    root = write_tree(tmp_path / "data", {"train": {"a": 3, "b": 3}})
    (root / "train" / "empty").mkdir()
    dm = module(root, image_size=8)
    with pytest.raises(DataError, match=r"class folder '.*train/empty' has no image files"):
        dm.setup("fit")
    assert module(root, classes=["a", "b"], val_split=2).num_classes == 2  # leaving the empty class out works

    listing = tmp_path / "classes.txt"
    listing.write_text("# my subset\na  first class\nzebra\n")
    with pytest.raises(DataError, match=r"1 of the 2 requested classes have no folder in .*: zebra"):
        module(root, classes=str(listing))
    with pytest.raises(DataError, match="class_count 5 is more than the 3 classes"):
        module(root, class_count=5)
    with pytest.raises(DataError, match="neither a shipped list"):
        module(root, classes="imagenet1000")

    write_tree(root, {"val": {"a": 2, "c": 2}})
    with pytest.raises(DataError, match=r"only in train: \['b', 'empty'\]; only in val: \['c'\]"):
        module(root, classes=["a", "b"]).setup("fit")


def test_shipped_class_lists():
    imagenet100 = read_class_list("imagenet100")
    assert len(imagenet100) == 100 and len(set(imagenet100)) == 100
    assert imagenet100[:3] == ["n02869837", "n01749939", "n02488291"]  # CMC's order
    assert all(name.startswith("n") and len(name) == 9 for name in imagenet100)
    assert read_class_list("imagenette")[0] == "n01440764" and len(read_class_list("imagenette")) == 10
    assert read_class_list("imagewoof")[-1] == "n02115641" and len(set(read_class_list("imagewoof"))) == 10


# ---------------------------------------------------------------- subsets, labels, splits
def test_class_subset_is_a_function_of_its_seed_and_labels_follow_sorted_order(tmp_path):
    root = write_tree(tmp_path / "data", {"train": {f"class{i:02d}": 2 for i in range(20)}})
    first = module(root, class_count=5, class_seed=0, image_size=8)
    again = module(root, class_count=5, class_seed=0, image_size=8)
    other = module(root, class_count=5, class_seed=1, image_size=8)
    assert first.classes == again.classes and first.classes != other.classes
    assert first.num_classes == 5 and first.classes == sorted(first.classes)
    # random.Random is specified to give the same stream on any machine: pin the choice.
    assert first.classes == ["class01", "class08", "class12", "class13", "class15"]
    assert first.class_to_idx == {name: index for index, name in enumerate(first.classes)}

    picked = module(root, classes=["class17", "class04", "class09"], val_split=1)
    picked.setup("fit")
    assert picked.class_to_idx == {"class04": 0, "class09": 1, "class17": 2}
    for path, label in picked.samples["train"] + picked.samples["val"]:
        assert picked.classes[label] in path


def test_stratified_split_sizes_determinism_and_cap(tmp_path):
    labels = [0] * 10 + [1] * 20 + [2] * 30
    train, val = stratified_split(labels, 0.1, seed=0)
    assert [sum(labels[i] == c for i in val) for c in range(3)] == [1, 2, 3]
    assert sorted(train + val) == list(range(60))
    assert stratified_split(labels, 0.1, seed=0) == (train, val) and stratified_split(labels, 0.1, seed=1)[1] != val
    train, val = stratified_split(labels, 12, seed=0)
    assert [sum(labels[i] == c for i in val) for c in range(3)] == [2, 4, 6]
    with pytest.raises(DataError, match="leaves no image"):
        stratified_split(labels, 60, seed=0)

    root = write_tree(tmp_path / "data", {"train": {"a": 10, "b": 20, "c": 30}})
    dm = module(root, val_split=0.2)
    dm.setup("fit")
    per_class = lambda samples: [sum(label == c for _, label in samples) for c in range(3)]  # noqa: E731
    assert per_class(dm.samples["val"]) == [2, 4, 6] and per_class(dm.samples["train"]) == [8, 16, 24]
    capped = module(root, max_per_class=5, val_split=0.2)
    capped.setup("fit")
    assert per_class(capped.samples["train"]) == [4, 4, 4] and per_class(capped.samples["val"]) == [1, 1, 1]
    assert not set(capped.samples["train"]) & set(capped.samples["val"])


def test_test_split_is_held_out_of_train_before_val_and_shares_no_image(tmp_path):
    """The clean protocol for a folder without test/: train / val / test, three disjoint stratified splits."""
    root = write_tree(tmp_path / "data", {"train": {"a": 10, "b": 20, "c": 30}})
    per_class = lambda samples: [sum(label == c for _, label in samples) for c in range(3)]  # noqa: E731
    dm = module(root, test_split=0.2, val_split=0.25)
    assert dm.has_test_split
    dm.setup("fit")
    dm.setup("test")
    splits = {name: set(dm.samples[name]) for name in ("train", "val", "test")}
    assert per_class(dm.samples["test"]) == [2, 4, 6]  # 20% of each class
    assert per_class(dm.samples["val"]) == [2, 4, 6]  # 25% of the remaining 48
    assert per_class(dm.samples["train"]) == [6, 12, 18]
    assert not (splits["train"] & splits["val"] or splits["train"] & splits["test"] or splits["val"] & splits["test"])
    assert len(dm.test_set) == 12 and dm.describe()["test_source"] == "split of train (0.2)"
    # The test images do not move when the validation share changes, and the same seed gives the same split.
    other = module(root, test_split=0.2, val_split=0.1)
    other.setup("fit")
    assert set(other.samples["test"]) == splits["test"]

    with pytest.raises(DataError, match="test_split .* or data.test_on_val"):
        module(root, test_split=0.2, test_on_val=True)
    with pytest.raises(DataError, match="test_split must be"):
        module(root, test_split=0)
    with pytest.raises(DataError, match="test_split 60 leaves no image"):
        module(root, test_split=60).setup("fit")
    foldered = write_tree(tmp_path / "with_test", {"train": {"a": 4, "b": 4}, "test": {"a": 2, "b": 2}})
    with pytest.raises(DataError, match="has a test/ folder"):
        module(foldered, test_split=0.25).setup("fit")


def test_statistics_are_computed_once_cached_and_given_ones_win(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for name, value in (("a", 51), ("b", 153)):  # 0.2 and 0.6
        for i in range(4):
            write_image(root / "train" / name / f"{i}.png", value=value)
    dm = module(root, val_split=2)
    dm.setup("fit")
    # Training split: 3 images of each class after a stratified 2-image val split -> mean 0.4, std 0.2.
    assert dm.mean == pytest.approx([0.4] * 3, abs=1e-6) and dm.std == pytest.approx([0.2] * 3, abs=1e-6)
    assert dm.train_set[0][0].abs().max() == pytest.approx(1.0, abs=1e-5)  # (0.2 - 0.4) / 0.2

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr("src.data.folder_scan.probe", no_decoding)
    cached = module(root, val_split=2)
    cached.setup("fit")
    assert cached.mean == dm.mean
    given = module(root, val_split=2, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], check_files=False)
    given.setup("fit")
    assert given.mean == [0.5, 0.5, 0.5]


def test_no_test_folder_says_so_and_a_test_folder_is_used(tmp_path):
    root = write_tree(tmp_path / "data", {"train": {"a": 4, "b": 4}})
    dm = module(root, val_split=2)
    with pytest.raises(DataError, match="has no test split.*data.test_on_val"):
        dm.setup("test")
    on_val = module(root, val_split=2, test_on_val=True)
    on_val.setup("fit")
    on_val.setup("test")
    assert len(on_val.test_set) == len(on_val.val_set) == 2 and on_val.describe()["test_source"] == "val"
    write_tree(root, {"test": {"a": 1, "b": 2}})
    dm = module(root, val_split=2)
    dm.setup("test")
    assert len(dm.test_set) == 3 and sorted(label for _, label in dm.samples["test"]) == [0, 1, 1]


# ---------------------------------------------------------------- ILSVRC and Tiny-ImageNet layouts
def make_flat_ilsvrc(root):
    write_tree(root, {"train": {"n01440764": 2, "n02102040": 2, "n03000684": 2}})
    truth = {"ILSVRC2012_val_00000001": "n02102040", "ILSVRC2012_val_00000002": "n01440764"}
    truth |= {"ILSVRC2012_val_00000003": "n03000684", "ILSVRC2012_val_00000004": "n02102040"}
    for i, name in enumerate(truth):
        write_image(root / "val" / f"{name}.JPEG", seed=i)
    return truth


def test_flat_ilsvrc_val_from_a_ground_truth_file_or_meta_bin(tmp_path):
    root = tmp_path / "imagenet"
    truth = make_flat_ilsvrc(root)
    with pytest.raises(DataError, match="no class folders, and its ground truth was not found"):
        module(root).setup("fit")

    solution = tmp_path / "LOC_val_solution.csv"  # Kaggle's format: header, file stem, "wnid box..."
    solution.write_text("ImageId,PredictionString\n" + "".join(f"{k},{v} 1 2 3 4\n" for k, v in truth.items()))
    dm = module(root, val_labels=str(solution), classes=["n02102040", "n03000684"])
    dm.setup("fit")
    val = {path.split("/")[-1]: dm.classes[label] for path, label in dm.samples["val"]}
    assert val == {f"{k}.JPEG": v for k, v in truth.items() if v != "n01440764"}
    assert len(dm.samples["train"]) == 4  # train/ as is; val came from the flat folder

    # torchvision's parsed devkit: (wnid -> names, one wnid per val file in sorted order)
    torch.save(({wnid: (wnid,) for wnid in set(truth.values())}, list(truth.values())), root / "meta.bin")
    from_meta = module(root)
    from_meta.setup("fit")
    assert {p.split("/")[-1]: from_meta.classes[label] for p, label in from_meta.samples["val"]} == {
        f"{k}.JPEG": v for k, v in truth.items()
    }
    assert list((root / "val").iterdir()) and not any(p.is_dir() for p in (root / "val").iterdir())  # nothing moved


def make_tiny_imagenet_zip(tmp_path):
    top = tmp_path / "build" / "tiny-imagenet-200"
    for wnid in ("n01443537", "n01629819"):
        for i in range(3):
            write_image(top / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", seed=i)
        (top / "train" / wnid / f"{wnid}_boxes.txt").write_text("boxes\n")
    annotations = {"val_0.JPEG": "n01629819", "val_1.JPEG": "n01443537", "val_2.JPEG": "n01629819"}
    for i, name in enumerate(annotations):
        write_image(top / "val" / "images" / name, seed=20 + i)
    (top / "val" / "val_annotations.txt").write_text(
        "".join(f"{k}\t{v}\t0\t0\t10\t10\n" for k, v in annotations.items())
    )
    write_image(top / "test" / "images" / "test_0.JPEG")
    (top / "wnids.txt").write_text("n01443537\nn01629819\n")
    archive = tmp_path / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(top.rglob("*")):
            handle.write(path, path.relative_to(top.parent))
    return archive, annotations


def test_tiny_imagenet_is_extracted_once_and_refoldered(tmp_path, monkeypatch):
    archive, annotations = make_tiny_imagenet_zip(tmp_path)
    calls = []

    def fake_download(url, download_root, md5=None):
        calls.append(url)
        shutil.copy(archive, download_root)
        extract_archive(str(tmp_path / download_root / archive.name))

    monkeypatch.setattr(downloads, "download_and_extract_archive", fake_download)
    monkeypatch.chdir(tmp_path)
    dm = ImageFolderDataModule(dataset="tiny-imagenet", data_dir="downloads", num_workers=0)
    assert dm.num_classes == 2 and dm.input_shape == (3, 8, 8) and calls == [downloads.ARCHIVES["tiny-imagenet"].url]
    extracted = tmp_path / "downloads" / "tiny-imagenet-200"
    assert sorted(p.name for p in (extracted / "val").iterdir()) == ["n01443537", "n01629819"]
    assert not (extracted / "test").exists() and (extracted / "test_unlabeled" / "images" / "test_0.JPEG").exists()
    dm.setup("fit")
    val = {path.split("/")[-1]: dm.classes[label] for path, label in dm.samples["val"]}
    assert val == annotations and len(dm.samples["train"]) == 6

    again = ImageFolderDataModule(dataset="tiny-imagenet", data_dir="downloads", num_workers=0)
    assert again.num_classes == 2 and len(calls) == 1  # extracted once


def test_offline_download_names_the_folder(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError) as error:
        ImageFolderDataModule(dataset="imagenette-160", data_dir=str(tmp_path), download=False)
    assert str(tmp_path / "imagenette2-160") in str(error.value) and "imagenette2-160.tgz" in str(error.value)

    def no_network(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(downloads, "download_and_extract_archive", no_network)
    with pytest.raises(DatasetNotFoundError, match="could not be downloaded .*imagewoof2-320.tgz"):
        ImageFolderDataModule(dataset="imagewoof-320", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="dataset must be one of"):
        ImageFolderDataModule(dataset="imagenet-21k", data_dir=str(tmp_path))


# ---------------------------------------------------------------- the CLI, end to end
@pytest.mark.slow
def test_grayscale_pngs_fit_and_test_through_the_cli(tmp_path):
    """A folder never seen before: 28-px grayscale PNGs, no val folder, a test folder; no model edit."""
    root = write_tree(
        tmp_path / "digits", {"train": {"one": 24, "two": 24, "three": 24}, "test": {"one": 4, "two": 4, "three": 4}},
        size=(28, 28), mode="L", learnable=True,
    )  # fmt: skip
    args = [
        "--model.arch", "resnet8", "--data", "ImageFolderDataModule", "--data.root", str(root),
        "--data.in_channels", "1", "--data.val_split", "0.25", "--data.batch_size", "18", "--data.num_workers", "0",
        "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
    ]  # fmt: skip
    fit = cli("fit", *args, "--test_after_fit", "true", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run_dir = tmp_path / "lightning_logs" / "default" / "version_0"
    report = json.loads((run_dir / "efficiency.json").read_text())
    assert report["input_shape"] == [1, 28, 28] and report["num_classes"] == 3
    assert report["test_acc"] is not None
    hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    assert hparams["in_channels"] == 1 and hparams["num_classes"] == 3
    record = json.loads((run_dir / "data.json").read_text())
    assert record["classes"] == {"one": 0, "three": 1, "two": 2}
    assert record["split_sizes"] == {"train": 54, "val": 18, "test": 12}
    assert len(record["mean"]) == 1 and 0 < record["mean"][0] < 1

    test = cli("test", *args, "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"), cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    tested = json.loads((run_dir / "evaluations" / "test.json").read_text())  # recorded in the checkpoint's run
    assert 0.0 <= tested["test_acc"] <= 1.0 and tested["test_samples"] == 12
    assert json.loads((run_dir / "evaluations" / "test-data.json").read_text())["split_sizes"] == record["split_sizes"]

    bad = cli("fit", *args, "--data.classes", "[one, four]", cwd=tmp_path)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "error: 1 of the 2 requested classes have no folder" in bad.stderr and "four" in bad.stderr
