"""The image-folder DataModule's settings, checked before any file is read, and the folder they name.

Apart from ``src.data.folder`` so that the DataModule reads as what it does with a folder; every message
says the setting, the value and what is valid.
"""

from __future__ import annotations

from src.data import download as downloads
from src.data import transforms
from src.data.base import DataError


def check_folder_options(
    preset: str | None,
    in_channels: int,
    val_split: float,
    test_split: float | None,
    test_on_val: bool,
    mean: list[float] | None,
    std: list[float] | None,
    bad_files: str,
    fast_max_gb: float | None,
    **at_least_one: int | None,
) -> None:
    """Refuse settings that cannot work, each with the value and what is valid, before any file is read."""
    if preset is not None:
        transforms.check_preset(preset)
    if in_channels not in (1, 3):
        raise DataError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels}")
    if val_split <= 0:
        raise DataError(f"val_split must be a fraction in (0, 1) or a number of images >= 1, got {val_split}")
    for name, value in at_least_one.items():
        if value is not None and value < 1:
            raise DataError(f"{name} must be >= 1 (or null), got {value}")
    if (mean is None) != (std is None) or (
        mean is not None and std is not None and not len(mean) == len(std) == in_channels
    ):
        raise DataError(f"mean and std must both be null or both have {in_channels} values, got {mean}, {std}")
    if bad_files not in ("error", "skip"):
        raise DataError(f"bad_files must be 'error' or 'skip', got {bad_files!r}")
    if test_split is not None and test_split <= 0:
        raise DataError(f"test_split must be a fraction in (0, 1), a number of images >= 1, or null, got {test_split}")
    if test_split is not None and test_on_val:
        raise DataError(
            "give data.test_split (a test split held out of train) or data.test_on_val (test the validation "
            "split), not both"
        )
    if fast_max_gb is not None and fast_max_gb <= 0:
        raise DataError(f"fast_max_gb must be > 0 (GB of decoded images) or null, got {fast_max_gb}")


def data_root(root: str | None, dataset: str | None, data_dir: str, download: bool) -> str:
    """The folder to read: ``root`` as given, or a named data set's, downloaded and unpacked under ``data_dir``."""
    if dataset is not None:
        if root is not None:
            raise DataError(f"give data.root or data.dataset, not both (got {root!r} and {dataset!r})")
        return downloads.prepare(dataset, data_dir, download)  # here, not in prepare_data: see README
    if root is None:
        raise DataError(
            f"set data.root (a folder with train/<class>/<image>) or data.dataset (one of {sorted(downloads.ARCHIVES)})"
        )
    return root
