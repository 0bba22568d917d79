"""Downloadable image-folder data sets: fetched into ``data_dir`` and extracted once.

* Imagenette and Imagewoof (fast.ai): 10 ImageNet classes each, as ``train/<wnid>/`` and
  ``val/<wnid>/``, at 160 px (shorter side), 320 px or full size.
* Tiny-ImageNet-200 (Stanford CS231n): 200 classes of 64x64 images. Its ``val/`` is flat, with
  labels in ``val_annotations.txt``; after extraction it is re-foldered into ``val/<wnid>/`` so it
  reads like every other folder here, and its unlabelled ``test/`` is renamed ``test_unlabeled/``.

A marker file (``.complete``) records a finished extraction, so a later run (or another process
of the same DDP job, waiting on a lock file) reuses the folder instead of extracting again.
Archives are checked against their MD5 where the publisher's checksum is known.

An archive is extracted here, not by torchvision's ``extract_archive`` (whose ``tarfile.extractall`` trusts
every member): fast.ai publishes no checksum for Imagewoof, so an ``imagewoof2*.tgz`` already in ``data_dir``
is used as found, and whoever put it there could otherwise write anywhere the user can (``../x``, a symlink
out of the folder and a file written through it). :func:`extract_archive_safely` checks every member first
and extracts nothing unless all of them land inside ``data_dir`` as files, folders or inward links.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import NamedTuple

from torchvision.datasets.utils import check_integrity, download_url

from src.data.base import DataError, DatasetNotFoundError
from src.data.locking import file_lock
from src.files import resolves_inside

FASTAI = "https://s3.amazonaws.com/fast-ai-imageclas"
MARKER = ".complete"


class Archive(NamedTuple):
    url: str
    md5: str | None
    folder: str  # what the archive extracts to, under data_dir


ARCHIVES: dict[str, Archive] = {
    # Imagenette MD5s as torchvision.datasets.Imagenette checks them; fast.ai publishes none for Imagewoof.
    "imagenette": Archive(f"{FASTAI}/imagenette2.tgz", "fe2fc210e6bb7c5664d602c3cd71e612", "imagenette2"),
    "imagenette-320": Archive(f"{FASTAI}/imagenette2-320.tgz", "3df6f0d01a2c9592104656642f5e78a3", "imagenette2-320"),
    "imagenette-160": Archive(f"{FASTAI}/imagenette2-160.tgz", "e793b78cc4c9e9a4ccc0c1155377a412", "imagenette2-160"),
    "imagewoof": Archive(f"{FASTAI}/imagewoof2.tgz", None, "imagewoof2"),
    "imagewoof-320": Archive(f"{FASTAI}/imagewoof2-320.tgz", None, "imagewoof2-320"),
    "imagewoof-160": Archive(f"{FASTAI}/imagewoof2-160.tgz", None, "imagewoof2-160"),
    "tiny-imagenet": Archive(
        "http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de", "tiny-imagenet-200"
    ),
}


def check_name(name: str) -> Archive:
    if name not in ARCHIVES:
        raise ValueError(f"dataset must be one of {sorted(ARCHIVES)} (or null with root set), got {name!r}")
    return ARCHIVES[name]


def dataset_root(name: str, data_dir: str) -> str:
    """Where ``name`` lives (or will live) once extracted: ``data_dir/<archive folder>``."""
    return os.path.join(data_dir, check_name(name).folder)


def is_complete(name: str, data_dir: str) -> bool:
    return os.path.exists(os.path.join(dataset_root(name, data_dir), MARKER))


def how_to_get(name: str, data_dir: str) -> str:
    archive = check_name(name)
    return (
        f"Either run once with internet access and data.download: true, or download {archive.url} yourself and "
        f"extract it into '{data_dir}' (it unpacks to '{dataset_root(name, data_dir)}'; then create an empty file "
        f"'{MARKER}' there)."
    )


def prepare(name: str, data_dir: str, download: bool) -> str:
    """The extracted folder of ``name``: downloaded and extracted first when needed (once). Returns its path."""
    root = dataset_root(name, data_dir)
    if is_complete(name, data_dir):
        return root
    if not download:
        raise DatasetNotFoundError(f"{name} was not found in '{root}'. {how_to_get(name, data_dir)}")
    with file_lock(os.path.join(data_dir, f".{name}.lock")):
        if is_complete(name, data_dir):  # another process finished while we waited
            return root
        archive = ARCHIVES[name]
        try:
            download_and_extract_archive(archive.url, download_root=data_dir, md5=archive.md5)
        except OSError as err:  # URLError and socket errors are OSErrors
            raise DatasetNotFoundError(
                f"{name} is not in '{root}' and could not be downloaded ({err}). {how_to_get(name, data_dir)}"
            ) from None
        if name == "tiny-imagenet":
            refolder_tiny_imagenet(root)
        Path(root, MARKER).touch()
    return root


class UnsafeArchiveError(DataError):
    """An archive holds members that would land outside the folder it is extracted into (or are not files,
    folders or links): extracting it could overwrite any file the user can write."""


def download_and_extract_archive(url: str, download_root: str, md5: str | None = None) -> None:
    """Download ``url`` into ``download_root`` (unless there already, with a matching ``md5``) and extract it there.

    Same call as torchvision's function of this name, which this replaces: the download is still torchvision's
    ``download_url`` (redirects, the MD5 check after downloading), the extraction :func:`extract_archive_safely`.
    An archive found in place without a checksum to check it against is said to be unverified.
    """
    path = os.path.join(download_root, os.path.basename(url))
    if os.path.isfile(path) and check_integrity(path, md5):
        verified = "its MD5 matches" if md5 is not None else f"not verified: no checksum is published for {url}"
        print(f"Using the archive found at '{path}' ({verified}); extracting it", flush=True)
    else:
        download_url(url, download_root, md5=md5)
    try:
        extract_archive_safely(path, download_root)
    except UnsafeArchiveError as error:
        raise UnsafeArchiveError(
            f"{error} Delete '{path}' and run again to download it anew from {url}, or extract a copy you trust "
            "yourself."
        ) from None


def extract_archive_safely(path: str, to: str) -> None:
    """Extract the ``.zip`` or tar archive ``path`` into ``to``, all of it or (when a member is refused) nothing.

    Every member is checked before anything is written: an absolute path, a ``..`` part, a link whose target is
    absolute or climbs with ``..``, a device or pipe is refused, and the error names each refused member and why.
    A tar archive is then extracted with tarfile's ``"data"`` filter where Python has it (3.11.4+, 3.12+), which
    re-checks each member against the folder as it is on disk (e.g. a folder already there that is a link out).
    ``zipfile`` itself never creates links; its own renaming of bad names is not relied on.
    """
    if path.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            names = [info.filename for info in archive.infolist()]
            _refuse(path, to, [(name, _path_refusal(name) or _lands_outside(name, to)) for name in names])
            archive.extractall(to)
        return
    with tarfile.open(path) as archive:
        members = archive.getmembers()
        _refuse(path, to, [(member.name, _tar_refusal(member)) for member in members])
        if not hasattr(tarfile, "data_filter"):  # Python < 3.11.4: the checks above are all there is
            archive.extractall(to, members=members)
            return
        try:
            archive.extractall(to, members=members, filter="data")
        except tarfile.FilterError as error:
            name = error.tarinfo.name if error.tarinfo is not None else "?"
            raise UnsafeArchiveError(f"refused to extract '{path}' into '{to}': {name!r} ({error}).") from None


def _lands_outside(name: str, to: str) -> str | None:
    """Why a zip member would land outside ``to`` once links already on disk are followed (``to/data`` a link
    out: ``data/x`` is written there; tar's data filter checks this, zipfile does not), else None."""
    where = os.path.join(to, name)
    if not resolves_inside(where, to, folder_itself=True):
        return f"it would be written outside the folder, at '{os.path.realpath(where)}' (a link on disk leads there)"
    return None


def _refuse(path: str, to: str, checked: list[tuple[str, str | None]]) -> None:
    """Raise :class:`UnsafeArchiveError` naming each member refused (``why`` not None), at most 10 of them."""
    refused = [(name, why) for name, why in checked if why is not None]
    if not refused:
        return
    listed = "; ".join(f"{name!r}: {why}" for name, why in refused[:10])
    more = f"; and {len(refused) - 10} more" if len(refused) > 10 else ""
    raise UnsafeArchiveError(
        f"refused to extract '{path}': {len(refused)} of its members would not land inside '{to}' as a file, "
        f"folder or inward link ({listed}{more}). Nothing was extracted."
    )


def _parts(name: str) -> list[str]:
    return re.split(r"[/\\]", name)


NAME_MAX = 255  # bytes in one file or folder name on the usual filesystems (ext4, XFS, APFS, NTFS)


def _path_refusal(name: str) -> str | None:
    """Why a member's own path is refused (None: it lands inside the folder): absolute, a ``..`` part, or a
    name no filesystem takes (empty, a part over ``NAME_MAX`` bytes), refused before anything is written
    rather than failing halfway through the extraction."""
    if not name.strip("/"):
        return "an empty name (valid: a path relative to the archive's top)"
    if any(len(part.encode()) > NAME_MAX for part in _parts(name)):
        return f"a file or folder name over {NAME_MAX} bytes, which filesystems refuse (valid: {NAME_MAX} or fewer)"
    if os.path.isabs(name) or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path (valid: a path relative to the archive's top)"
    if ".." in _parts(name):
        return "a '..' part in its path, which would place it outside the folder (valid: no '..')"
    return None


def _tar_refusal(member: tarfile.TarInfo) -> str | None:
    """Why a tar member is refused (None: accepted): its path, a link that could leave the folder, a device."""
    why = _path_refusal(member.name)
    if why is not None:
        return why
    if member.issym() or member.islnk():
        kind = "a symbolic link" if member.issym() else "a hard link"
        target = member.linkname
        if os.path.isabs(target) or target.startswith(("/", "\\")):
            return f"{kind} to the absolute path {target!r} (valid: a relative target without '..')"
        if ".." in _parts(target):
            return f"{kind} to {target!r}, which climbs with '..' and can point outside the folder (valid: no '..')"
        return None
    if not (member.isfile() or member.isdir()):
        return "a device, pipe or other special file (valid: files, folders and links)"
    return None


def read_labels_file(path: str) -> dict[str, str]:
    """``{file name: class}`` from a ground-truth text file: one ``<file> <class> [anything...]`` per line.

    Whitespace or a comma separates the fields, so Tiny-ImageNet's ``val_annotations.txt``, Kaggle's
    ILSVRC ``LOC_val_solution.csv`` and a hand-written list all read the same; a header line whose
    second field is not a class is the caller's to drop.
    """
    labels = {}
    with open(path) as handle:
        for line in handle:
            fields = line.replace(",", " ").split()
            if len(fields) >= 2 and not fields[0].startswith("#"):
                labels[fields[0]] = fields[1]
    return labels


def refolder_tiny_imagenet(root: str) -> None:
    """Move Tiny-ImageNet's flat ``val/images/*.JPEG`` into ``val/<wnid>/`` by ``val/val_annotations.txt``."""
    val = Path(root, "val")
    annotations = val / "val_annotations.txt"
    if not annotations.exists():
        raise DatasetNotFoundError(f"'{annotations}' is missing: '{val}' cannot be sorted into class folders")
    images = val / "images"
    for file_name, wnid in read_labels_file(str(annotations)).items():
        (val / wnid).mkdir(exist_ok=True)
        source = images / file_name
        if source.exists():
            source.rename(val / wnid / file_name)
    if images.exists() and not any(images.iterdir()):
        images.rmdir()
    annotations.rename(Path(root, "val_annotations.txt"))  # keep it, outside the class folders
    test = Path(root, "test")
    if test.exists():  # no labels: not a split this module can score
        shutil.move(str(test), str(Path(root, "test_unlabeled")))
