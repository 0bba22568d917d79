"""A study's committed results folder: what ``python -m src.report`` was given (a log root, a results folder,
a study file), and for ``--check`` what differs between the committed files and configs and what HEAD gives.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import yaml

from src.class_paths import foreign_class_paths, strings_in
from src.reporting.figure_data import FIGURE_DATA
from src.reporting.own_nets import CSV_FILE as OWN_NETS_CSV
from src.reporting.selection_section import CSV_FILE as SELECTION_CSV
from src.runs import find_run_dirs
from src.sweeping.plan import plan_runs
from src.sweeping.results import read_index
from src.sweeping.run_state import config_differences, saved_configs
from src.sweeping.selection import read_selection, summary
from src.sweeping.study import SELECTION_FILE, Study, StudyError, is_study_file, load_study, run_command

CHECKED_FILES = (
    "report.md",
    "report.csv",
    "report_lines.csv",
    "report_comparisons.csv",
    "report_depth.csv",
    "report_lesions.csv",
    "report_iso_params.csv",
    FIGURE_DATA,
)
OPTIONAL_FILES = (SELECTION_CSV, OWN_NETS_CSV)  # written only by some studies: checked when either side has it


def _relative(path: Path) -> Path:
    """``path`` relative to here when inside (the report then names no path of this machine)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def results_source(results: Path, study: Study | None = None) -> tuple[Path, list | None, str]:
    """A results folder's root, expected runs (from the study that names it, when found) and title."""
    results = _relative(results)
    index = read_index(results) or {}
    if study is None and index.get("study_file") and Path(index["study_file"]).is_file():
        try:
            study = load_study(index["study_file"]).validate()
        except StudyError:
            study = None  # --check says what is wrong with it; the report still reads the runs
    expected = None
    if study is not None:
        planned = plan_runs(study, results_only=True)
        expected = [(run.variant, run.seed, results / run.variant / f"seed{run.seed}") for run in planned]
    title = f"{index.get('study') or (study.name if study else results.name)} (committed results)"
    return results, expected, title


def resolve_source(source: Path) -> tuple[Path, list | None, str | None]:
    """``(root, expected runs, title)`` of what ``python -m src.report`` was given (StudyError if unusable)."""
    if source.is_file():
        if not is_study_file(source):
            try:  # a plan or study file with a YAML mistake read as "not a study file" (it was one: an audit)
                yaml.safe_load(source.read_text())
            except yaml.YAMLError as error:
                raise StudyError(f"{str(source)!r} is not valid YAML: {' '.join(str(error).split())}") from None
            raise StudyError(
                f"{str(source)!r} is a file but not a study file (it has no 'archs') nor an analysis plan (no "
                "'hypotheses')"
            )
        study = load_study(source).validate()
        if study.results:
            return results_source(Path(study.results), study)
        return study.directory, [(run.variant, run.seed, run.run_dir) for run in plan_runs(study)], None
    if source.is_dir():
        if read_index(source) is not None:
            return results_source(source)
        return source, None, None
    raise StudyError(f"{str(source)!r} does not exist; give a log root (a folder of runs) or a study file")


# Numbers in a report line, as Python and the report write them (a digit run inside a name, "resnet20", is one too:
# it is compared exactly like the text around it, both sides having it).
NUMBER = re.compile(r"([-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)")
# How far a regenerated number may lie from the committed one: the last bits of BLAS/LAPACK results differ between
# CPUs (AVX2 against AVX-512 kernels), and a fit (``c + a N^-b`` by curve_fit) carries that into its parameters:
# 482885.40011 committed on one machine, 482884.97351 regenerated on another (9e-7 relative). A change of the
# analysis moves numbers far more than this.
REL_TOL = 1e-5


def same_line(committed: str, regenerated: str) -> bool:
    """Equal text, and numbers equal within ``REL_TOL`` (relative; ``1e-9`` absolute near zero)."""
    if committed == regenerated:
        return True
    old, new = NUMBER.split(committed), NUMBER.split(regenerated)
    if len(old) != len(new):
        return False
    for index, (was, now) in enumerate(zip(old, new, strict=True)):
        if index % 2 == 0:  # text between numbers
            if was != now:
                return False
        elif not math.isclose(float(was), float(now), rel_tol=REL_TOL, abs_tol=1e-9):
            return False
    return True


def file_differences(committed: Path, fresh: Path, limit: int = 3) -> list[str]:
    """What differs between the committed report files and the regenerated ones, file by file (numbers within
    ``REL_TOL``: the machine's floating point, not the analysis)."""
    problems = []
    optional = [name for name in OPTIONAL_FILES if (committed / name).is_file() or (fresh / name).is_file()]
    for name in [*CHECKED_FILES, *optional]:
        old, new = committed / name, fresh / name
        if not new.is_file():
            problems.append(f"{old}: committed, but the report no longer writes it")
            continue
        if not old.is_file():
            problems.append(f"{old}: not committed (the report writes it)")
            continue
        old_lines, new_lines = old.read_text().splitlines(), new.read_text().splitlines()
        differing = [i for i in range(max(len(old_lines), len(new_lines))) if i >= len(old_lines)
                     or i >= len(new_lines) or not same_line(old_lines[i], new_lines[i])]  # fmt: skip
        if not differing:
            continue
        problems.append(f"{old}: {len(differing)} line(s) differ from what the committed runs give")
        for i in differing[:limit]:
            was = old_lines[i] if i < len(old_lines) else "<no line>"
            now = new_lines[i] if i < len(new_lines) else "<no line>"
            problems.append(f"  line {i + 1}: committed   {was[:160]!r}")
            problems.append(f"  line {i + 1}: regenerated {now[:160]!r}")
    return problems


def _committed_study(results: Path) -> tuple[Study, str]:
    """The study that plans a results folder (named by its ``results.json``) and its file; StudyError if none."""
    study_file = (read_index(results) or {}).get("study_file")
    if not study_file:
        raise StudyError(f"{results / 'results.json'}: names no study file, so the runs' configs cannot be checked")
    try:
        return load_study(study_file).validate(), study_file
    except StudyError as error:
        raise StudyError(f"study file of {results}: {error}") from None


def _yaml(path: str) -> object:
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None  # resolving the config reports it


CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def _with_named_files(configs: list[tuple[object, Path]]) -> list[object]:
    """``configs`` (each with the folder its relative paths start from) and every config file their strings
    name, followed to any depth, each read once: resolving a config reads a file given where a class or a
    group is expected (``optimizer: opt.yaml``) as more config, so the names in it are imports too."""
    seen: set[Path] = set()
    found, todo = [], list(configs)
    while todo:
        config, folder = todo.pop()
        found.append(config)
        for _, text in strings_in(config):
            if not text.endswith(CONFIG_SUFFIXES):
                continue
            for path in {folder / text, Path.cwd() / text}:  # relative to its config, or to here
                if path.is_file() and path.resolve() not in seen:
                    seen.add(path.resolve())
                    todo.append((_yaml(str(path)), path.parent))
    return found


def _nested(args: dict) -> dict:
    """``{"model.net_class": X}`` as ``{"model": {"net_class": X}}``, so its keys read like a config's."""
    nested: dict = {}
    for key, value in args.items():
        *parents, last = key.lstrip("-").split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return nested


def config_problems(results: Path) -> list[str]:
    """Committed runs whose resolved config is not what the study file at HEAD plans for them."""
    try:
        study, study_file = _committed_study(results)
    except StudyError as error:
        return [str(error)]
    configs = [(_yaml(config), Path(config).parent) for config in study.configs]
    configs += [(_nested(study.args), Path(study_file).parent), (study.nets, Path(study_file).parent)]
    # Every string that could name code (not only class paths), in the configs and in the files they name:
    # resolving them would import it, and --check runs in CI and imports no code from elsewhere.
    foreign = foreign_class_paths(_with_named_files(configs))
    if foreign:
        return [
            f"{study_file} names code that is neither loaded nor part of this repository ({', '.join(foreign)}); "
            "--check does not import it, so the committed configs cannot be compared"
        ]
    planned = {f"{run.variant}/seed{run.seed}": run for run in plan_runs(study, results_only=True)}
    # lightning and the models: only when there are configs to compare
    from src.cli_support.lightning_cli import resolved_config

    problems = []
    for run_dir in find_run_dirs(results):
        label = run_dir.relative_to(results).as_posix()
        run = planned.get(label)
        if run is None:
            problems.append(f"{label}: a committed run that {study_file} does not plan")
            continue
        config = resolved_config(run_command(study, run)[3:])
        for saved in saved_configs(run_dir):
            differences = config_differences(saved, config, limit=5)
            if differences:
                problems.append(f"{label}: config differs from what {study_file} plans: {', '.join(differences)}")
                break
    return problems


def selection_problems(results: Path) -> list[str]:
    """A committed ``selection.json`` that is not what the committed selection runs give (or is missing)."""
    try:
        study, study_file = _committed_study(results)
    except StudyError:
        return []  # config_problems says what is wrong with the study file
    expected = summary(study, plan_runs(study, results_only=True), results_only=True)
    committed = read_selection(results)
    if expected is None:
        return [f"{results / SELECTION_FILE}: committed, but {study_file} selects nothing"] if committed else []
    if committed is None:
        return [f"{results / SELECTION_FILE}: not committed ({study_file} selects per variant)"]
    if json.loads(json.dumps(expected)) != committed:
        return [
            f"{results / SELECTION_FILE}: not what the committed selection runs give; regenerate it with "
            f"python -m src.sweep {study_file} --collect"
        ]
    return []
