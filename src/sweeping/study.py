"""A study: architectures x seeds x overrides on top of base configs, and the runs it expands to.

A study file (``configs/studies/*.yaml``)::

    name: cifar10_ladder                    # the study's folder under root
    root: lightning_logs
    configs: [configs/cifar10/resnet20.yaml]  # base config(s) of every run, stacked in order
    archs: [resnet20, resnet56, plain20, plain56]
    widths: [1, 2]                          # optional: each CIFAR arch at each width (resnet20, resnet20_2, ...)
    seeds: [0, 1]                           # or per arch: {resnet20: [0, 1, 2], plain20: [0, 1]}
    grid:                                   # every combination; each key names the run directory
      model.shortcut: [A, B]
    select:                                 # optional: a setting chosen per variant on the validation split
      grid: {model.optimizer.init_args.lr: [0.05, 0.1, 0.2]}   # (src/sweeping/selection.py)
    args:                                   # the same for every run (does not name the directory)
      trainer.max_steps: 64000
    slurm: {...}                            # see src/sweeping/slurm.py
    results: docs/results/cifar10_ladder    # optional: where each ended run's small files are committed

expands to one run per (arch, grid combination, seed), in the directory
``<root>/<name>/<arch>[-<key><value>...]/seed<k>/``. ``model.shortcut`` does not apply to plain
networks (they have no shortcuts), so a plain network runs once per seed, named without it.

An ``archs`` entry may also be your own network by class path (``src.sweeping.own_nets``) or a pruned network
that starts each seed from another entry's run (``src.sweeping.pruned_nets``).

``widths`` crosses every arch with each width multiplier ``k`` before anything else: ``resnet20`` at
``k = 1`` keeps its name, at ``k = 2`` it is ``resnet20_2`` (the name ``src.models.names`` parses), so
the directories and ``--arch`` use the same names. Only the CIFAR ResNets and plain nets have a width
multiplier; a Wide ResNet's width is in its name. Without ``widths`` the archs run as listed.

With ``results``, each run also has a results folder ``<results>/<variant>/seed<k>/`` (see
``src.sweeping.results``): the sweep copies the run there when it ends and skips it when it is there.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from src.sweeping.own_nets import EXAMPLE, net_args_for, split_archs, unknown_name_hint
from src.sweeping.pruned_nets import EXAMPLE as PRUNED_EXAMPLE

STUDY_KEYS = ("name", "root", "configs", "archs", "widths", "seeds", "grid", "select", "args", "slurm", "results")
RESERVED_KEYS = {
    "model.arch": "list architectures under 'archs'",
    "seed_everything": "list seeds under 'seeds'",
    "run_dir": "the sweep chooses each run's directory",
    "ckpt_path": "the sweep resumes unfinished runs itself",
    "model.net_class": f"list your own network under 'archs' as {EXAMPLE}, so its runs carry its name",
    "model.net_args": f"give your network's arguments in its 'archs' entry: {EXAMPLE}",
    "model.init_from": f"a pruned 'archs' entry starts each seed from another entry's run: {PRUNED_EXAMPLE}",
    "model.pruning": f"prune in an 'archs' entry of its own, so its runs carry its name: {PRUNED_EXAMPLE}",
}
SHORTCUT_KEY = "model.shortcut"
SELECT_DIR = "select"  # the selection runs' folder inside the study folder and the results folder
SELECTION_FILE = "selection.json"
METRICS = ("best_val_acc", "last_val_acc")
SELECT_KEYS = ("grid", "seeds", "metric", "args")
SLURM_KEYS = ("sbatch", "setup", "srun", "max_parallel")  # what each means: src.sweeping.slurm
CONFIG_EXAMPLE = "configs/cifar10/resnet20.yaml"


class StudyError(ValueError):
    """A study definition that cannot be run; the message says what is wrong and what is valid."""


def check_setting_keys(where: str, mapping: dict[Any, Any]) -> None:
    """Settings (``grid``, ``args``, ``select``'s) are keyed by the run's dotted keys, as text."""
    for key in mapping:
        if not isinstance(key, str) or not key.strip("- "):
            raise StudyError(
                f"{where} has the key {key!r}: a setting's key is its dotted name (e.g. trainer.max_steps)"
            )


def check_slurm(options: Any) -> None:
    """The study's ``slurm`` block (``src.sweeping.slurm``): its keys and what each holds."""
    if options is None:
        return
    if not isinstance(options, dict):
        raise StudyError(f"'slurm' must be a mapping with keys {list(SLURM_KEYS)}, got {options!r}")
    unknown = sorted(map(str, set(options) - set(SLURM_KEYS)))
    if unknown:
        raise StudyError(f"unknown keys under 'slurm': {unknown}; valid: {list(SLURM_KEYS)}")
    sbatch = options.get("sbatch")
    if sbatch is not None and (
        not isinstance(sbatch, dict)
        or not all(isinstance(key, str) for key in sbatch)
        or not all(isinstance(value, (str, int, float)) for value in sbatch.values())
    ):
        raise StudyError(
            "'slurm: sbatch' must map sbatch options to values (e.g. {partition: gpu, gres: \"gpu:1\", time: "
            f'"12:00:00"}}), got {sbatch!r}'
        )
    setup = options.get("setup")
    if setup is not None and not (
        isinstance(setup, str) or (isinstance(setup, list) and all(isinstance(line, str) for line in setup))
    ):
        raise StudyError(
            f"'slurm: setup' must be a shell command or a list of them (e.g. [\"module load cuda\"]), got {setup!r}"
        )
    if options.get("srun") is not None and not isinstance(options["srun"], bool):
        raise StudyError(f"'slurm: srun' must be true or false, got {options['srun']!r}")
    most = options.get("max_parallel")
    if most is not None and (not isinstance(most, int) or isinstance(most, bool) or most < 1):
        raise StudyError(
            f"'slurm: max_parallel' must be a whole number >= 1 (array tasks at once, e.g. 8), got {most!r}"
        )


@dataclass
class Study:
    """What to run: see the module docstring for the meaning of each field."""

    name: str
    root: str = "lightning_logs"
    configs: list[str] = field(default_factory=list)
    archs: list[str] = field(default_factory=list)
    widths: list[int] | None = None  # width multipliers each arch is crossed with (None: the archs as listed)
    seeds: list[int] | dict[str, list[int]] = field(default_factory=lambda: [0])  # or {arch: seeds}
    grid: dict[str, list[Any]] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)  # raw CLI arguments appended to every run
    slurm: dict[str, Any] = field(default_factory=dict)
    results: str | None = None  # folder of the committed results runs (src.sweeping.results)
    select: dict[str, Any] | None = None  # per-variant selection on validation (src.sweeping.selection)
    source: str | None = None  # the study file it was read from, if any
    nets: dict[str, dict[str, Any]] = field(default_factory=dict)  # your own networks by name (own_nets.py)
    pruned: dict[str, dict[str, Any]] = field(default_factory=dict)  # pruned entries by name (pruned_nets.py)
    narrowed: bool = False  # archs replaced by the sweep's --arch: a pruned entry's parent may be left out
    # The study before the sweep's --arch / --seed narrowed it: selection.json speaks for all of it (a sweep of one
    # arch wrote a selection.json of that arch alone, which the committed results' --check then refused).
    whole: Study | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.archs, list) and any(isinstance(entry, dict) for entry in self.archs):
            try:
                self.archs, nets, pruned = split_archs(self.archs)
            except ValueError as error:
                raise StudyError(str(error)) from None
            self.nets = {**self.nets, **nets}
            self.pruned = {**self.pruned, **pruned}

    @property
    def directory(self) -> Path:
        return Path(self.root) / self.name

    def results_dir(self, run: RunSpec) -> Path | None:
        """Where the run's committed result lives (``<results>/<variant>/seed<k>``); None without ``results``."""
        return None if not self.results else Path(self.results) / run.variant / f"seed{run.seed}"

    def seeds_of(self, arch: str) -> list[int]:
        """The seeds ``arch`` runs with: ``seeds``, or its own entry when ``seeds`` maps archs to seeds."""
        return list(self.seeds[arch]) if isinstance(self.seeds, dict) else list(self.seeds)

    def all_seeds(self) -> list[int]:
        """Every seed of the study, in order (the union over archs when seeds are per arch)."""
        if isinstance(self.seeds, dict):
            return sorted({seed for seeds in self.seeds.values() for seed in seeds})
        return list(self.seeds)

    def arch_names(self) -> list[str]:
        """The architectures the study runs: ``archs``, each at every one of ``widths`` (arch-major), if given;
        pruned entries are not crossed with widths (they name their parent, widths included) and come last."""
        if self.widths is None:
            return list(self.archs)
        from src.models.names import with_width  # imports torch (src.models): only when a study is really planned

        dense = [with_width(arch, width) for arch in self.archs if arch not in self.pruned for width in self.widths]
        return dense + [arch for arch in self.archs if arch in self.pruned]

    def validate(self) -> Study:
        from src.models import parse_arch  # imports torch: only when a study is really checked

        if not isinstance(self.name, str) or not re.fullmatch(r"[\w.-]+", self.name) or set(self.name) == {"."}:
            number = isinstance(self.name, (int, float)) and not isinstance(self.name, bool)
            hint = f" (a number: quote it, name: '{self.name}')" if number else ""
            raise StudyError(
                f"study name must be a non-empty folder name (letters, digits, _ . -), got {self.name!r}{hint}"
            )
        self._validate_types()
        if not self.archs:
            raise StudyError("a study needs at least one architecture under 'archs' (e.g. [resnet20, plain20])")
        for arch in self.archs:
            try:
                parse_arch(arch)
            except ValueError as error:
                if arch not in self.nets and arch not in self.pruned:
                    raise StudyError(f"{error}{unknown_name_hint(arch)}") from None
            else:
                if arch in self.nets or arch in self.pruned:
                    raise StudyError(f"the name {arch!r} is a built-in architecture's: give your entry its own")
        if len(set(self.archs)) != len(self.archs):
            raise StudyError(f"'archs' lists an architecture twice: {self.archs}")
        if self.widths is not None:
            self._validate_widths()
        self._validate_seeds()
        if self.pruned:
            self._validate_pruned()
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise StudyError(f"grid key {key!r} needs a non-empty list of values, got {values!r}")
            if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
                raise StudyError(f"grid key {key!r} lists a value twice: {values}")
        for key in [*self.grid, *self.args]:
            if reserved := clash(key, RESERVED_KEYS):
                raise StudyError(f"{key!r} cannot be set in a study: {reserved[1]}")
        if self.results is not None and (not isinstance(self.results, str) or not self.results.strip()):
            raise StudyError(f"'results' must be a folder path (e.g. docs/results/{self.name}), got {self.results!r}")
        self._validate_extra_args(parse_selection(self))
        for config in self.configs:
            if not Path(config).is_file():
                raise StudyError(f"base config {config!r} does not exist (paths are relative to {Path.cwd()})")
        return self

    def _validate_types(self) -> None:
        """What the study file must hold where the checks below read it (a number where a path goes, a list where a
        mapping goes: one line naming the key, not a traceback from deep inside)."""
        if not isinstance(self.root, str) or not self.root.strip():
            raise StudyError(f"'root' must be a folder path (e.g. lightning_logs), got {self.root!r}")
        if not isinstance(self.configs, list):
            raise StudyError(
                f"'configs' must be a list of run config files (e.g. [{CONFIG_EXAMPLE}]), got {self.configs!r}"
            )
        for config in self.configs:
            if not isinstance(config, str) or not config.strip():
                raise StudyError(f"'configs' lists {config!r}: a run config is a file path (e.g. {CONFIG_EXAMPLE})")
        if not isinstance(self.archs, list):
            raise StudyError(f"'archs' must be a list of architectures (e.g. [resnet20, plain20]), got {self.archs!r}")
        for where, mapping in (("grid", self.grid), ("args", self.args)):
            if not isinstance(mapping, dict):
                raise StudyError(f"'{where}' must be a mapping of settings (e.g. {{trainer.max_steps: 2000}}), got "
                                 f"{mapping!r}")  # fmt: skip
            check_setting_keys(f"'{where}'", mapping)
        check_slurm(self.slurm)

    def _validate_extra_args(self, selection: Selection | None) -> None:
        """Arguments after ``--`` come last in every run's command, so they would win over what the sweep sets:
        the seed, the arch, the run folder, a grid axis, a selected setting (the folders would not say so)."""
        taken = {
            **RESERVED_KEYS,
            **{key: "a 'grid' axis, each variant at its own value: list the values under 'grid'" for key in self.grid},
            **{
                key: "chosen per variant by 'select' (one value for every candidate leaves nothing to choose): "
                "list the candidates under 'select: grid'"
                for key in (selection.grid if selection else {})
            },
        }
        for argument, key in extra_arg_keys(self.extra_args):
            if hit := clash(key, taken):
                set_key, why = hit
                mine, theirs = flag_key(key), flag_key(set_key)
                where = (
                    ""
                    if mine == theirs
                    else f" (which holds {set_key!r})"
                    if theirs.startswith(mine)
                    else (f" (inside {set_key!r})")
                )
                raise StudyError(
                    f"the argument {argument!r} after '--' would set {key!r}{where} in every run, which the sweep "
                    f"sets itself: {why}; arguments after '--' may set any other key (e.g. -- --trainer.max_steps 2000)"
                )

    def _validate_seeds(self) -> None:
        per_arch = self.seeds if isinstance(self.seeds, dict) else {"": self.seeds}
        if isinstance(self.seeds, dict):
            names = self.arch_names()
            missing, extra = [a for a in names if a not in self.seeds], [a for a in self.seeds if a not in names]
            if missing or extra:
                raise StudyError(
                    f"'seeds' per arch must name each of {names} once: "
                    + "; ".join([*(f"{a} has no seeds" for a in missing), *(f"{a} is not in 'archs'" for a in extra)])
                )
        for arch, seeds in per_arch.items():
            where = f"'seeds' of {arch}" if arch else "'seeds'"
            if (
                not isinstance(seeds, list)
                or not seeds
                or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
            ):
                raise StudyError(f"{where} must be a non-empty list of integers, got {seeds!r}")
            if len(set(seeds)) != len(seeds):
                raise StudyError(f"{where} lists a seed twice: {seeds}")

    def _validate_pruned(self) -> None:
        """Each pruned entry starts from a built-in entry listed before it, seed by seed, with no grid around it."""
        from src.models import parse_arch  # imports torch: only when a study is really checked
        from src.modules.pruning import Pruning

        names = self.arch_names()
        for name in [name for name in names if name in self.pruned]:
            spec = self.pruned[name]
            parent = spec["from"]
            if self.narrowed and parent not in names:  # sweep --arch: its parent's runs were (or will be) made apart
                try:
                    parse_arch(parent)
                except ValueError as error:
                    raise StudyError(f"{name}: 'prune' {parent!r}: {error}") from None
            elif parent not in names or parent in self.pruned or parent in self.nets:
                dense = [n for n in names if n not in self.pruned and n not in self.nets]
                raise StudyError(f"{name}: 'prune' must name a built-in architecture of this study, one of {dense}; "
                                 f"got {parent!r}")  # fmt: skip
            if parent in names and names.index(parent) > names.index(name):
                raise StudyError(f"{name}: list {parent} before it in 'archs' (its runs start from {parent}'s)")
            if self.grid:
                raise StudyError(
                    f"{name}: a pruned entry starts from one run per seed, and 'grid' makes several "
                    f"({list(self.grid)}); give the grid's settings in 'args', or prune in a study of its own"
                )
            try:
                Pruning.from_config(spec["pruning"])
            except (TypeError, ValueError) as error:
                raise StudyError(f"{name}: {error}") from None
            for key in spec["args"]:
                if reserved := clash(key, RESERVED_KEYS):
                    raise StudyError(f"{name}: 'args' cannot set {key!r}: {reserved[1]}")
            parent_seeds = self.seeds_of(parent) if not isinstance(self.seeds, dict) or parent in self.seeds else None
            missing = [seed for seed in self.seeds_of(name) if parent_seeds is not None and seed not in parent_seeds]
            if missing:
                raise StudyError(f"{name}: seeds {missing} have no {parent} run to start from (its seeds: "
                                 f"{parent_seeds})")  # fmt: skip

    def _validate_widths(self) -> None:
        widths = self.widths
        if self.nets:
            raise StudyError(
                f"'widths' multiplies the built-in CIFAR nets; {sorted(self.nets)} are your own classes: list each "
                "width as its own 'archs' entry with the width in its net_args"
            )
        if not isinstance(widths, list) or not widths:
            raise StudyError(f"'widths' must be a non-empty list of integers >= 1 (e.g. [1, 2, 4]), got {widths!r}")
        for width in widths:
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise StudyError(
                    f"'widths' lists {width!r}: a width multiplier k must be an integer >= 1 (e.g. [1, 2, 4])"
                )
        if len(set(widths)) != len(widths):
            raise StudyError(f"'widths' lists a width twice: {widths}")
        try:
            names = self.arch_names()
        except ValueError as error:
            raise StudyError(str(error)) from None
        if len(set(names)) != len(names):
            raise StudyError(f"'archs' x 'widths' names an architecture twice: {names}")


@dataclass(frozen=True)
class Selection:
    """A study's ``select`` block, checked."""

    grid: dict[str, list[Any]]
    seeds: list[int]
    metric: str = "best_val_acc"
    args: dict[str, Any] = field(default_factory=dict)

    def candidates(self) -> list[tuple[tuple[str, Any], ...]]:
        """Every combination of the grid, in grid order: ``((key, value), ...)``."""
        keys = list(self.grid)
        return [tuple(zip(keys, values)) for values in itertools.product(*(self.grid[key] for key in keys))]


def parse_selection(study: Study) -> Selection | None:
    """The study's ``select`` block as a ``Selection`` (None without one); StudyError says what is wrong."""
    data = study.select
    if data is None:
        return None
    example = "e.g. select: {grid: {model.optimizer.init_args.lr: [0.05, 0.1, 0.2]}}"
    if not isinstance(data, dict):
        raise StudyError(f"'select' must be a mapping with keys {list(SELECT_KEYS)} ({example}), got {data!r}")
    unknown = sorted(set(data) - set(SELECT_KEYS))
    if unknown:
        raise StudyError(f"'select' has unknown keys {unknown}; valid keys: {list(SELECT_KEYS)}")
    grid = data.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise StudyError(f"'select' needs a non-empty 'grid' of settings to choose from ({example}), got {grid!r}")
    check_setting_keys("select 'grid'", grid)
    for key, values in grid.items():
        if not isinstance(values, list) or len(values) < 2:
            raise StudyError(f"select grid key {key!r} needs a list of at least two candidates, got {values!r}")
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise StudyError(f"select grid key {key!r} lists a value twice: {values}")
        if reserved := clash(key, RESERVED_KEYS):
            raise StudyError(f"{key!r} cannot be selected: {reserved[1]}")
        if key in study.grid:
            raise StudyError(f"{key!r} is both a grid axis and selected: a setting is either compared or chosen")
    # Default: the whole study's first seed -- a sweep narrowed to other seeds or archs (one job per seed) must
    # choose from the same selection runs, or its variants would train at other values than the study's.
    seeds = data.get("seeds", (study.whole or study).all_seeds()[:1])
    seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise StudyError(f"select 'seeds' must be a non-empty list of integers, got {data.get('seeds')!r}")
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"select 'seeds' lists a seed twice: {seeds}")
    metric = data.get("metric", "best_val_acc")
    if metric not in METRICS:
        raise StudyError(f"select 'metric' must be one of {list(METRICS)} (validation accuracy), got {metric!r}")
    args = data.get("args") or {}
    if not isinstance(args, dict):
        raise StudyError(f"select 'args' must be a mapping of settings for the selection runs, got {args!r}")
    check_setting_keys("select 'args'", args)
    taken = {
        **RESERVED_KEYS,
        **{key: "it is chosen: a candidate of the select 'grid'" for key in grid},
        **{key: "it is a 'grid' axis: each variant's selection runs train at its own value" for key in study.grid},
    }
    for key in args:
        if hit := clash(key, taken):
            raise StudyError(f"select 'args' cannot set {key!r}: {hit[1]}")
    return Selection(dict(grid), list(seeds), metric, dict(args))


def flag_key(key: str) -> str:
    """A setting's dotted key as the run's parser reads it, for comparing keys: no leading dashes, no trailing
    ``+`` (jsonargparse's append) and no ``init_args`` level (it takes ``--model.optimizer.lr`` for
    ``--model.optimizer.init_args.lr``)."""
    parts = str(key).strip().lstrip("-").rstrip("+").split(".")
    return ".".join(part for part in parts if part != "init_args")


def clash(key: str, taken: dict[str, str]) -> tuple[str, str] | None:
    """The entry of ``taken`` (key -> why it is taken) that setting ``key`` would change, if any: the same key,
    one inside it (``model.optimizer`` holds ``model.optimizer.init_args.lr``) or one around it."""
    mine = flag_key(key)
    for other, why in taken.items():
        theirs = flag_key(other)
        if mine == theirs or theirs.startswith(mine + ".") or mine.startswith(theirs + "."):
            return other, why
    return None


def extra_arg_keys(extra: list[str]) -> list[tuple[str, str]]:
    """What each option among the raw run arguments sets: ``(the argument as typed, its dotted key)``, for
    ``--key value`` and ``--key=value``; a ``--config``/``-c`` file (or inline YAML) counts as every key it sets."""
    found = []
    for index, token in enumerate(extra):
        if not token.startswith("-") or re.fullmatch(r"-[\d.]+(e[-+]?\d+)?", token) or token == "-":
            continue  # a value (a negative number), not an option
        name, equals, value = token.partition("=")
        if not equals and index + 1 < len(extra) and not extra[index + 1].startswith("--"):
            value, shown = extra[index + 1], f"{token} {extra[index + 1]}"
        else:
            shown = token
        if name in ("--config", "-c"):
            found += [(shown, key) for key in _config_keys(value)]
        else:
            found.append((shown, name.lstrip("-")))
    return found


def _config_keys(source: str) -> list[str]:
    """The dotted keys a run config (a file, or YAML text) sets; none when it cannot be read (the run says why)."""
    try:
        text = Path(source).read_text() if Path(source).is_file() else source
    except (OSError, ValueError):  # not a file (too long a name for one): YAML text
        text = source
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return []

    # Not runs.flatten: that drops an empty mapping (nothing to compare between two runs), while here a
    # ``key: {}`` in a --config file counts as setting ``key`` (it may reset what the sweep set there).
    def leaves(node: Any, prefix: str) -> list[str]:
        if not isinstance(node, dict) or not node:
            return [prefix] if prefix else []
        return [
            key for name, child in node.items() for key in leaves(child, f"{prefix}.{name}" if prefix else str(name))
        ]

    return leaves(data, "") if isinstance(data, dict) else []


def load_study(path: str | Path) -> Study:
    """Read and check a study file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise StudyError(f"cannot read study file {str(path)!r}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise StudyError(f"study file {str(path)!r} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise StudyError(f"study file {str(path)!r} must be a mapping with keys {', '.join(STUDY_KEYS)}")
    unknown = sorted(set(data) - set(STUDY_KEYS))
    if unknown:
        hint = ""
        if {"model", "trainer", "data"} & set(unknown):
            hint = " (this looks like a run config: list it under 'configs', or pass it to the sweep with --config)"
        raise StudyError(f"study file {str(path)!r} has unknown keys {unknown}; valid keys: {list(STUDY_KEYS)}{hint}")
    if data.get("name") is None:  # left out or empty: the file's name
        data["name"] = path.stem
    for key in ("configs", "archs", "seeds", "widths"):
        if isinstance(data.get(key), (str, int)):
            data[key] = [data[key]]
    for key in ("grid", "args", "slurm"):
        if data.get(key) is None:
            data[key] = {}
        elif not isinstance(data[key], dict):
            raise StudyError(f"'{key}' in {str(path)!r} must be a mapping, got {data[key]!r}")
    data["grid"] = {k: v if isinstance(v, list) else [v] for k, v in data["grid"].items()}
    data = {key: value for key, value in data.items() if value is not None}
    return Study(**data, source=path.as_posix())


def is_study_file(path: str | Path) -> bool:
    """Whether a YAML file is a study (it has 'archs'), as opposed to a run config."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "archs" in data


def cli_value(value: Any) -> str:
    """A YAML value as the run CLI reads it back: true/false, null, numbers, JSON for lists and mappings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def name_part(value: Any) -> str:
    return re.sub(r"[^\w.+-]+", "_", cli_value(value)).strip("_") or "none"


def claim_folder(seen: dict[str, Any], folder: str, settings: Any, values: dict[str, Any], what: str) -> bool:
    """Whether ``folder`` is new: recorded in ``seen`` for ``settings``; False when the same settings named it
    before. Two different settings that name one folder would silently share its runs: StudyError, naming the
    ``values`` (``what``: which values, e.g. "grid values") of both."""
    if folder not in seen:
        seen[folder] = (settings, values)
        return True
    if seen[folder][0] != settings:
        raise StudyError(
            f"{what} {seen[folder][1]} and {values} both name the run folder {folder!r}; make the values differ "
            "in letters or digits (directory names keep only those)"
        )
    return False


def key_labels(keys: list[str]) -> dict[str, str]:
    """The label of each grid key in directory names: its last dotted component, unless two keys share it."""
    leaves = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: leaf if leaves.count(leaf) == 1 else re.sub(r"\W+", "_", key) for key, leaf in zip(keys, leaves)}


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: which network, which overrides, which seed, and where it lives."""

    study: str
    variant: str  # <arch>[-<key><value>...]: the folder that holds the seeds
    arch: str
    seed: int
    overrides: tuple[tuple[str, Any], ...]
    run_dir: Path
    selects: str | None = None  # a selection run: the variant whose value it helps choose (src.sweeping.selection)
    pending: bool = False  # a variant's run whose selected value is not known yet: not to be started
    after: Path | None = None  # a pruned entry's run: the parent run it starts from, which must finish first

    @property
    def label(self) -> str:
        return f"{self.variant}/seed{self.seed}"


def run_dir_args(run_dir: Path) -> list[str]:
    """The CLI arguments that put a run's files in exactly ``run_dir`` (run identity, ``--run_dir``)."""
    return ["--run_dir", str(run_dir)]


def run_command(study: Study, run: RunSpec, resume: bool = False, python: str | None = None) -> list[str]:
    """The fresh process that trains and tests one run (``resume``: continue from its ``last.ckpt``)."""
    command = [python or sys.executable, "-m", "src.cli", "fit"]
    for config in study.configs:
        command += ["--config", str(config)]
    command += run_dir_args(run.run_dir)
    command += ["--seed_everything", str(run.seed), "--model.arch", run.arch]
    for key, value in [*net_args_for(study.nets, run.arch), *study.args.items(), *run.overrides]:
        command += [f"--{key.lstrip('-')}", cli_value(value)]
    command += list(study.extra_args)
    if resume:
        command += ["--ckpt_path", "last"]
    return command


def format_command(command: list[str]) -> str:
    return shlex.join(command)
