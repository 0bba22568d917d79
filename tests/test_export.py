"""``python -m src.data.export``: the torchvision CIFAR archive as PNG class folders, pixel for pixel."""

from __future__ import annotations

import pickle

import numpy as np
from PIL import Image
from torchvision import datasets

from src.data import export


def _archive(root, dataset: str) -> tuple[np.ndarray, list[int], np.ndarray, list[int], list[str]]:
    """Train and test pixels (N, 32, 32, 3) and labels, and class names, read straight from the pickles."""
    cifar10 = dataset == "cifar10"
    cls = datasets.CIFAR10 if cifar10 else datasets.CIFAR100
    folder = root / cls.base_folder
    key = "labels" if cifar10 else "fine_labels"

    def read(names: list[str]) -> tuple[np.ndarray, list[int]]:
        batches = [pickle.loads((folder / name).read_bytes()) for name in names]
        data = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return data, [label for b in batches for label in b[key]]

    train, train_labels = read([name for name, _ in cls.train_list])
    test, test_labels = read([cls.test_list[0][0]])
    classes = pickle.loads((folder / cls.meta["filename"]).read_bytes())[cls.meta["key"]]
    return train, train_labels, test, test_labels, classes


def _folder(split_dir, classes: list[str]) -> dict[int, tuple[np.ndarray, int]]:
    """index -> (pixels, label) of every PNG written under ``split_dir/<class>/<index>.png``."""
    found = {}
    for label, name in enumerate(classes):
        for path in (split_dir / name).glob("*.png"):
            found[int(path.stem)] = (np.asarray(Image.open(path)), label)
    return found


def test_export_round_trips_cifar10_pixels_labels_and_splits(fake_cifar, tmp_path, capsys):
    root = fake_cifar("cifar10", train_per_file=6, test_size=7)
    out = tmp_path / "cifar10-png"
    assert export.main(["cifar10", str(out), "--data-dir", str(root)]) == 0

    train, train_labels, test, test_labels, classes = _archive(root, "cifar10")
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(classes)  # every class has its folder
    for split, pixels, labels in (("train", train, train_labels), ("test", test, test_labels)):
        written = _folder(out / split, classes)
        assert sorted(written) == list(range(len(labels)))  # 30 train, 7 test: every image once
        for index, (image, label) in written.items():
            assert label == labels[index]
            np.testing.assert_array_equal(image, pixels[index])  # lossless
    assert "train: 30 images in 10 class folders" in capsys.readouterr().out


def test_export_cifar100_uses_the_fine_labels(fake_cifar, tmp_path):
    root = fake_cifar("cifar100", train_per_file=2, test_size=5)
    out = tmp_path / "c100"
    assert export.export("cifar100", out, data_dir=root) == {"train": 10, "test": 5}
    _, _, test, test_labels, classes = _archive(root, "cifar100")
    assert len(list((out / "train").iterdir())) == 100
    written = _folder(out / "test", classes)
    assert [written[i][1] for i in range(5)] == test_labels


def test_export_refuses_a_non_empty_folder_and_leaves_it_alone(fake_cifar, tmp_path, capsys):
    root = fake_cifar("cifar10", train_per_file=2, test_size=2)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert export.main(["cifar10", str(out), "--data-dir", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not empty" in err and str(out) in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"


def test_export_an_empty_folder_is_fine(fake_cifar, tmp_path):
    root = fake_cifar("cifar10", train_per_file=1, test_size=1)
    (tmp_path / "empty").mkdir()
    assert export.export("cifar10", tmp_path / "empty", data_dir=root) == {"train": 5, "test": 1}


def test_export_without_the_archive_says_how_to_get_it(tmp_path, capsys):
    assert export.main(["cifar10", str(tmp_path / "out"), "--data-dir", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cifar10 is not in") and "--download" in err and "cifar-10-python.tar.gz" in err
    assert not (tmp_path / "out").exists()
