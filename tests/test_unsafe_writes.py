"""Writes a received file or folder must not redirect: an archive's members, a report's symlinks, a plan.json.

* a data set archive (an Imagewoof one has no published checksum, so a planted one is used as found) is
  extracted with its members checked: nothing lands outside ``data_dir``, the refusal names the member;
* ``python -m src.report`` replaces a symlink planted at a report file instead of writing through it;
* a results folder's ``plan.json`` cannot point the plan report at another folder.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from src import files
from src.analysis.checkpoint import CheckpointError, output_dir
from src.data import download as downloads
from src.data.base import DataError
from src.files import free_path
from src.report import main
from src.table_files import free_stem, write_csv
from tests.image_trees import write_image
from tests.study_runs import write_run
from tests.test_plan_report import _arm, _plan


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("the test must not download")


def _tar_member(archive: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _tar_link(archive: tarfile.TarFile, name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    archive.addfile(info)


def _planted_imagewoof(data_dir: Path, add: Callable[[tarfile.TarFile], object]) -> Path:
    """An ``imagewoof2-160.tgz`` already in ``data_dir`` (no checksum exists: it is used as found)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "imagewoof2-160.tgz"
    with tarfile.open(path, "w:gz") as archive:
        _tar_member(archive, "imagewoof2-160/train/n02086240/a.JPEG")
        add(archive)
    return path


@pytest.mark.parametrize(
    "plant, member, why",
    [
        (lambda a: _tar_member(a, "../PWNED_tar_traversal"), "../PWNED_tar_traversal", "'..'"),
        (lambda a: _tar_member(a, "imagewoof2-160/../../PWNED_tar_traversal"), "../../PWNED", "'..'"),
        (
            lambda a: (_tar_link(a, "escape", "../outside"), _tar_member(a, "escape/PWNED_through_link")),
            "'escape'",
            "outside",
        ),
        (lambda a: _tar_link(a, "imagewoof2-160/abs", "/etc/passwd"), "imagewoof2-160/abs", "absolute"),
        (lambda a: _tar_link(a, "imagewoof2-160/hard", "../outside/victim.txt", tarfile.LNKTYPE), "hard", "'..'"),
    ],
    ids=["dotdot", "nested-dotdot", "symlink-out", "absolute-link", "hardlink-out"],
)
def test_a_planted_archive_cannot_write_outside_data_dir(tmp_path, monkeypatch, plant, member, why):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("precious\n")
    data_dir = tmp_path / "work" / "data"
    _planted_imagewoof(data_dir, plant)
    monkeypatch.setattr(downloads, "download_url", _no_network)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    with pytest.raises(DataError) as error:
        downloads.prepare("imagewoof-160", str(data_dir), True)

    message = str(error.value)
    assert "refused to extract" in message and "imagewoof2-160.tgz" in message
    assert member in message and why in message
    assert not (tmp_path / "PWNED_tar_traversal").exists() and not (tmp_path / "work" / "PWNED_tar_traversal").exists()
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert (outside / "victim.txt").read_text() == "precious\n"
    # nothing extracted at all (not even the good member), and no marker: a later run tries again
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if ".lock" not in p.name) == [
        p for p in before if ".lock" not in p.name
    ]
    assert not downloads.is_complete("imagewoof-160", str(data_dir))


def test_a_normal_archive_still_extracts_to_its_folder(tmp_path, monkeypatch, capsys):
    data_dir = tmp_path / "data"
    _planted_imagewoof(data_dir, lambda a: _tar_member(a, "imagewoof2-160/val/n02086240/b.JPEG", b"yy"))
    monkeypatch.setattr(downloads, "download_url", _no_network)

    root = downloads.prepare("imagewoof-160", str(data_dir), True)

    assert root == str(data_dir / "imagewoof2-160")
    assert (data_dir / "imagewoof2-160" / "train" / "n02086240" / "a.JPEG").read_bytes() == b"x"
    assert (data_dir / "imagewoof2-160" / "val" / "n02086240" / "b.JPEG").read_bytes() == b"yy"
    assert downloads.is_complete("imagewoof-160", str(data_dir))
    assert "not verified" in capsys.readouterr().out  # an archive found in place, without a checksum: said


def test_a_downloaded_archive_is_fetched_with_its_checksum_then_extracted(tmp_path, monkeypatch):
    """The real download path: ``download_url`` with the publisher's MD5, then the checked extraction."""
    built = tmp_path / "built.tgz"
    with tarfile.open(built, "w:gz") as archive:
        _tar_member(archive, "imagenette2-160/train/n01440764/a.JPEG")
    calls = []

    def fake_download_url(url: str, root: str, filename: str | None = None, md5: str | None = None) -> None:
        calls.append((url, md5))
        Path(root, filename or Path(url).name).write_bytes(built.read_bytes())

    monkeypatch.setattr(downloads, "download_url", fake_download_url)
    root = downloads.prepare("imagenette-160", str(tmp_path / "data"), True)
    archive = downloads.ARCHIVES["imagenette-160"]
    assert calls == [(archive.url, archive.md5)]
    assert Path(root, "train", "n01440764", "a.JPEG").read_bytes() == b"x"


def test_a_zip_archive_is_checked_too(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with zipfile.ZipFile(data_dir / "tiny-imagenet-200.zip", "w") as archive:
        archive.writestr("tiny-imagenet-200/wnids.txt", "n01443537\n")
        archive.writestr("../PWNED_zip", "x")
    monkeypatch.setattr(downloads, "download_url", _no_network)
    # found in place, as if its MD5 matched (a checksum proves where it came from, not what its members do)
    monkeypatch.setattr(downloads, "check_integrity", lambda path, md5=None: True)
    with pytest.raises(DataError, match=r"refused to extract .*'\.\./PWNED_zip'.*'\.\.'"):
        downloads.prepare("tiny-imagenet", str(data_dir), True)
    assert not (tmp_path / "PWNED_zip").exists() and not (data_dir / "PWNED_zip").exists()
    assert not (data_dir / "tiny-imagenet-200").exists()


def test_a_zip_archive_extracts_and_is_refoldered(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    top = tmp_path / "build" / "tiny-imagenet-200"
    write_image(top / "train" / "n01443537" / "images" / "a.JPEG")
    write_image(top / "val" / "images" / "val_0.JPEG")
    (top / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01443537\t0\t0\t1\t1\n")
    data_dir.mkdir()
    with zipfile.ZipFile(data_dir / "tiny-imagenet-200.zip", "w") as archive:
        for path in sorted(top.rglob("*")):
            archive.write(path, path.relative_to(top.parent))
    monkeypatch.setattr(downloads, "download_url", _no_network)
    monkeypatch.setattr(downloads, "check_integrity", lambda path, md5=None: True)
    root = Path(downloads.prepare("tiny-imagenet", str(data_dir), True))
    assert (root / "val" / "n01443537" / "val_0.JPEG").is_file() and (root / "train" / "n01443537").is_dir()


# ---------------------------------------------------------------- python -m src.report and symlinks
def _log_root(tmp_path: Path) -> Path:
    root = tmp_path / "res"
    for seed, acc in enumerate((0.80, 0.82)):
        write_run(root / "resnet8" / f"seed{seed}", "resnet8", seed, test_acc=acc, params=1000)
    return root


def test_the_report_replaces_a_planted_symlink_instead_of_writing_through_it(tmp_path):
    root = _log_root(tmp_path)
    victim = tmp_path / "victim_target.txt"
    victim.write_text("precious\n")
    report = root / "report"
    report.mkdir()
    names = ["report.md", "report.csv", "figures.json", "report_lines.csv", "test_error_vs_params.png"]
    for name in names:
        (report / name).symlink_to(victim)

    assert main([str(root)]) == 0

    assert victim.read_text() == "precious\n"
    for name in names:
        assert not (report / name).is_symlink() and (report / name).is_file()
    assert (report / "report.md").read_text().startswith("#")
    assert not [p.name for p in report.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_the_report_refuses_a_report_folder_that_is_a_symlink(tmp_path, capsys):
    root = _log_root(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "report.md").write_text("precious\n")
    (root / "report").symlink_to(elsewhere)

    assert main([str(root)]) == 2

    assert (elsewhere / "report.md").read_text() == "precious\n"
    assert [p.name for p in elsewhere.iterdir()] == ["report.md"]
    err = capsys.readouterr().err
    assert "is a symbolic link" in err and str(root / "report") in err and "--out" in err


def test_the_plan_report_replaces_a_planted_symlink(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = _plan(tmp_path, _arm(tmp_path))
    results = tmp_path / "results" / "plan"
    results.mkdir(parents=True)
    victim = tmp_path / "victim_target.txt"
    victim.write_text("precious\n")
    (results / "report.md").symlink_to(victim)

    assert main([str(plan)]) == 0

    assert victim.read_text() == "precious\n"
    assert not (results / "report.md").is_symlink() and (results / "report.md").read_text().startswith("#")
    assert main(["--check", str(results)]) == 0  # the folder is the plan's own: reached through plan.json


# ---------------------------------------------------------------- a received folder's plan.json
def test_a_received_plan_json_cannot_redirect_the_plan_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    arm = _arm(tmp_path)
    target = tmp_path / "target"
    target.mkdir()
    (target / "report.md").write_text("precious\n")
    received = tmp_path / "received"
    received.mkdir()
    plan = _plan(received, arm)
    data = yaml.safe_load(plan.read_text())
    data["results"] = str(target)
    plan.write_text(yaml.safe_dump(data, sort_keys=False))
    (received / "plan.json").write_text(json.dumps({"plan": str(plan)}))

    assert main([str(received)]) == 2
    assert (target / "report.md").read_text() == "precious\n" and [p.name for p in target.iterdir()] == ["report.md"]
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(target) in err and str(received) in err and "results" in err

    assert main(["--check", str(received)]) == 2  # nor does --check compare another folder than the one named
    assert str(target) in capsys.readouterr().err


def test_a_dangling_link_in_a_received_folder_is_never_written_through(tmp_path):
    """lesion/prune/evaluations write new files under free names (``free_path``, ``free_stem``): a planted link
    whose target does not exist yet must count as taken, or the write would create the target wherever it points."""
    received, target = tmp_path / "run" / "lesion", tmp_path / "home" / "planted.csv"
    received.mkdir(parents=True)
    target.parent.mkdir()
    (received / "lesion.csv").symlink_to(target)  # dangling: the target is missing
    assert free_stem(received, ["lesion.csv", "lesion.png"]) == "-1"
    assert Path(free_path(received, "lesion.csv")).name == "lesion-1.csv"
    written = write_csv([{"block": "layer1.0", "cost": 1.0}], received, "lesion.csv")
    assert Path(written).name == "lesion-1.csv" and not target.exists()


def test_a_zip_member_never_follows_a_link_already_in_the_data_folder(tmp_path):
    """zipfile follows a folder link on disk (``data/`` -> elsewhere); tar's data filter refuses it, zip is checked."""
    to, outside = tmp_path / "to", tmp_path / "outside"
    to.mkdir()
    outside.mkdir()
    (to / "data").symlink_to(outside)
    archive_path = tmp_path / "a.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.writestr("data/zmarker", "x")
    with pytest.raises(DataError, match=r"'data/zmarker'.*outside the folder"):
        downloads.extract_archive_safely(str(archive_path), str(to))
    assert not (outside / "zmarker").exists()


def test_lesion_and_prune_never_write_through_a_linked_output_folder(tmp_path):
    """A received run whose lesion/ is a link elsewhere: refused before any work, naming the link and --out."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "lesion").symlink_to(elsewhere)
    with pytest.raises(CheckpointError, match=r"lesion' is a symbolic link .*--out DIR"):
        output_dir(run / "checkpoints" / "last.ckpt", "lesion")
    assert output_dir(run / "checkpoints" / "last.ckpt", "prune") == run / "prune"  # a real (or new) folder: fine


@pytest.mark.parametrize("bad", ["", "x" * 300])
def test_a_name_no_filesystem_takes_is_refused_before_anything_is_extracted(tmp_path, bad):
    """An empty name or a 300-byte one failed with a raw OSError halfway, after the members before it were written."""
    archive_path, to = tmp_path / "a.tar", tmp_path / "to"
    to.mkdir()
    with tarfile.open(archive_path, "w") as archive:
        for name in ("first.txt", bad):
            info = tarfile.TarInfo(name)
            info.size = 1
            archive.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DataError, match=r"refused to extract .*(empty name|over 255 bytes)"):
        downloads.extract_archive_safely(str(archive_path), str(to))
    assert list(to.iterdir()) == []  # all of it or nothing


def test_resolves_inside_follows_links_and_dotdot_and_says_whether_the_folder_itself_counts(tmp_path):
    folder, outside = tmp_path / "run", tmp_path / "elsewhere"
    (folder / "checkpoints").mkdir(parents=True)
    outside.mkdir()
    (folder / "out").symlink_to(outside)
    assert files.resolves_inside(folder / "checkpoints" / "last.ckpt", folder)  # need not exist yet
    assert not files.resolves_inside(folder / "checkpoints" / ".." / ".." / "precious.txt", folder)
    assert not files.resolves_inside(folder / "out" / "x.ckpt", folder)  # a link out of the folder
    assert not files.resolves_inside(tmp_path / "run-2" / "x", folder)  # a sibling sharing the name's start
    assert not files.resolves_inside(folder / ".", folder) and files.resolves_inside(folder, folder, folder_itself=True)
