"""From run directories to run records: each run's numbers, status and *variant* (the runs averaged together).

A *variant* is everything a run's resolved ``config.yaml`` fixes except its seed and the fields
that only say where things are written (run_dir, the logger, checkpoint folder, progress bar,
measurement callbacks): two runs are averaged only when they are the same variant. Folder names
never decide it -- runs of two architectures under one logger name (``version_0``, ``version_1``)
stay apart. A variant's name is its architecture plus every setting that differs within the study
(``resnet8 width=2``). ``src.reporting.study_rows`` turns the records into rows, lines and comparisons.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.models import arch_spec
from src.reporting import protocol
from src.reporting.paper import anchor_differences, protocol_differences
from src.runs import (
    find_run_dirs,
    flatten,
    network_params,
    read_config,
    read_data_record,
    read_efficiency,
    read_scalars,
    run_seed,
    run_status,
)
from src.sweeping.study import SELECT_DIR, SELECTION_FILE

# Config fields that say where a run writes or how it shows progress, not what it trains: never part of a variant.
NOT_IDENTITY = (
    "seed_everything",
    "run_dir",
    "ckpt_path",
    "model.init_from",  # the parent run's checkpoint: one per seed (its architecture and the pruning stay in)
    "weights_only",
    "test_after_fit",  # whether and when it was tested, not what it trained (the protocol line says)
    "trainer.logger",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "checkpoint.dirpath",
    "data.init_args.num_workers",
    "data.init_args.pin_memory",
    "efficiency",
    "diagnostics",
)


UNKNOWN_FAMILY = "unknown"


@dataclass
class RunRecord:
    """What one run left behind (or that it is missing)."""

    variant: str  # the variant's name (arch + settings that differ in the study); the folder for missing runs
    seed: int | None
    run_dir: Path
    status: str  # finished | diverged | unfinished | missing | outside (a run dir the study does not plan)
    arch: str | None = None
    params: int | None = None
    macs: int | None = None
    best_val_acc: float | None = None
    test_acc: float | None = None
    final_train_acc: float | None = None  # the last epoch's running training accuracy (augmented, as trained)
    test_samples: int | None = None
    shortcut: str | None = None
    train_time_sec: float | None = None
    train_compute: float | None = None  # MACs spent training: 3 x MACs x images seen
    compute_source: str | None = None
    diverged_step: int | None = None
    diverged_reason: str | None = None
    identity: tuple = ()  # the config fields that make the variant
    settings: dict[str, Any] = field(default_factory=dict)  # flattened identity, for naming
    context: dict[str, Any] = field(default_factory=dict)  # protocol description (src.reporting.protocol.describe)
    provenance: dict[str, Any] = field(default_factory=dict)
    earlier_provenance: list[dict[str, Any]] = field(default_factory=list)  # before a resume with other code, etc.
    paper_differences: list[str] = field(default_factory=list)
    anchor_differences: list[str] = field(default_factory=list)  # from its family's published anchors (wrn, preact)
    line: str = ""
    line_identity: tuple = ()
    depth: int = 0
    family: str = UNKNOWN_FAMILY  # a name the grammar does not know: a net plugged in by class path
    residual: bool = True
    width: int = 1  # the width multiplier in its name (resnet20_2: 2)
    pruned: bool = False  # started from another run's network, pruned (model.pruning): named by what it kept
    finetuned: bool = False  # a pruned net trained on after pruning (any training step), not only scored
    parent: str | None = None  # the run it started from (init_from), as ``<variant folder>/seed<k>``

    def provenances(self) -> list[dict[str, Any]]:
        """Every provenance the run had: its own, and those of the parts it ran before each resume.

        A run trained from a dirty tree (or another commit) and then resumed from a clean one records the clean
        tree as ``provenance`` and the earlier part under ``earlier_provenance``: its weights came from both, so a
        check of one code version must read both.
        """
        return [self.provenance, *self.earlier_provenance]


def _identity_fields(config: dict) -> dict[str, str]:
    flat = flatten(config)
    keep = {}
    for key, value in flat.items():
        if any(key == skip or key.startswith(skip + ".") for skip in NOT_IDENTITY):
            continue
        keep[key] = json.dumps(value, sort_keys=True, default=str)
    return keep


def _training_compute(report: dict, config: dict | None) -> tuple[float | None, str | None]:
    """3 x MACs per sample x images the optimizer stepped over, and where the image count came from.

    A fit that started from another run's network (``init_from``: a pruned net) adds its parent's images: its
    accuracy was bought with both trainings. Dense MACs for both (unstructured zeros do not shrink dense kernels).
    """
    macs = report.get("macs_per_sample")
    if not macs:
        return None, None
    start = report.get("init_from") if isinstance(report.get("init_from"), dict) else None
    if start is not None:
        own, parent = report.get("train_images_seen"), start.get("train_images_seen")
        if isinstance(own, int) and isinstance(parent, int):
            return 3.0 * macs * (own + parent), "train_images_seen + its init_from run's"
        return None, None  # the parent's share is unknown: no compute rather than too little
    if isinstance(report.get("train_images_seen"), int):
        return 3.0 * macs * report["train_images_seen"], "train_images_seen"
    steps = report.get("global_step")
    batch = report.get("global_batch_size")
    if steps and batch:
        return 3.0 * macs * batch * steps, "global batch x steps (efficiency.json has no train_images_seen)"
    batch = protocol.nested(config, "data", "init_args", "batch_size")
    steps = protocol.nested(config, "trainer", "max_steps")
    if steps and steps > 0 and batch:
        return 3.0 * macs * batch * steps, "batch size x max_steps (config; efficiency.json has no image count)"
    return None, None


def _earlier_provenance(report: dict) -> list[dict[str, Any]]:
    """``efficiency.json``'s ``earlier_provenance`` (the parts before each resume), its records only."""
    earlier = report.get("earlier_provenance")
    return [entry for entry in earlier if isinstance(entry, dict)] if isinstance(earlier, list) else []


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def read_run(run_dir: Path, variant: str, selected: tuple[str, ...] = ()) -> RunRecord:
    """One run as the report sees it; ``variant`` is a provisional name (the folder) until ``name_variants``.

    ``selected``: config keys chosen per variant by the study's selection, left out of the run's identity.
    """
    config = read_config(run_dir)
    report = read_efficiency(run_dir) or {}
    data = read_data_record(run_dir)
    arch = report.get("arch") or protocol.nested(config, "model", "arch")
    status = run_status(run_dir)
    record = RunRecord(
        variant=variant,
        seed=run_seed(run_dir, config),
        run_dir=run_dir,
        status=status,
        arch=arch,
        params=network_params(report),
        macs=report.get("macs_per_sample"),
        best_val_acc=_finite(report.get("best_val_acc")),
        test_acc=_finite(report.get("test_acc")),
        test_samples=report.get("test_samples"),
        shortcut=protocol.nested(config, "model", "shortcut"),
        train_time_sec=_finite(report.get("train_time_sec")),
        diverged_step=report.get("diverged_step"),
        diverged_reason=report.get("diverged_reason"),
        provenance=provenance if isinstance(provenance := report.get("provenance"), dict) else {},
        earlier_provenance=_earlier_provenance(report),
    )
    if status == "finished" and record.test_acc is None:  # tested, but the accuracy is NaN / inf
        record.status = "diverged"
        record.diverged_step = report.get("global_step")
        record.diverged_reason = f"test accuracy is {report.get('test_acc')} (no status: diverged recorded)"
    record.train_compute, record.compute_source = _training_compute(report, config)
    record.pruned = isinstance(report.get("pruning"), dict)
    start = report.get("init_from")
    if isinstance(start, dict) and isinstance(start.get("run_dir"), str):
        record.parent = run_key(Path(start["run_dir"]))  # absolute, on the machine that trained
    max_steps = protocol.nested(config, "trainer", "max_steps")
    record.finetuned = record.pruned and (max_steps != 0 or bool(report.get("train_images_seen")))
    if record.status == "finished":
        record.final_train_acc = final_train_accuracy(run_dir)
    if report or config:
        record.context = protocol.describe(config, report, data)
        split, checkpoint = protocol.test_protocol(config, report, data)
        record.paper_differences = protocol_differences(config, report, data, split, checkpoint)
    # Without config.yaml nothing says what the run was beyond its architecture: only seeds of one folder group.
    fields = _identity_fields(config) if config else {"config.yaml": json.dumps(f"absent: {run_dir.parent}")}
    if arch:
        fields["model.arch"] = json.dumps(arch)
    _drop_net_keys(fields, arch)
    try:  # the one parser of names; a net plugged in by class path (model.net_class) keeps the defaults
        spec = arch_spec(arch or "")
        record.family, record.residual, record.depth, record.width = spec.family, spec.residual, spec.depth, spec.width
    except ValueError:
        pass
    if (report or config) and record.family in ("wrn", "preact"):
        record.anchor_differences = anchor_differences(record.family, config, report, data, split, checkpoint)
    for key in selected:
        fields.pop(key, None)
    if not record.residual:
        fields.pop("model.shortcut", None)  # plain nets have no shortcut: the setting does not apply to them
    record.settings = fields
    record.identity = tuple(sorted(fields.items()))
    return record


def run_key(run_dir: Path) -> str:
    """``<variant folder>/seed<k>``: a run's name within its study, the same under any log root or results folder
    (what a pruned run's ``init_from.run_dir``, recorded on another machine, is matched by)."""
    return f"{run_dir.parent.name}/{run_dir.name}"


def _drop_net_keys(fields: dict[str, str], arch: str | None) -> None:
    """Keep ``model.net_class`` / ``model.net_args`` out of a variant's identity where its name says it all.

    A built-in net has none (both null), and a network a study named (``{name, net_class, net_args}``,
    ``src/sweeping/own_nets.py``) is that name. Only a class run without a name (its ``arch`` is then the class
    name, ``src.models.plugin.net_name``) keeps them: two runs of one class with other ``net_args`` differ.
    """
    class_path = json.loads(fields.get("model.net_class", "null"))
    if class_path is not None and str(class_path).rpartition(".")[2] == arch:
        return
    for key in [
        key for key in fields if key in ("model.net_class", "model.net_args") or key.startswith("model.net_args.")
    ]:
        del fields[key]


def final_train_accuracy(run_dir: Path) -> float | None:
    """The run's last logged ``train/acc``: the final epoch's running accuracy on the augmented training batches.

    It is He et al.'s *training error* (Fig. 6's thin lines are measured the same way, on augmented
    batches while training), so the degradation finding can be checked on it: a deeper plain net that is
    worse on held-out images *and* on its own training images is not overfitting.
    """
    _, values = read_scalars(run_dir, ["train/acc"]).get("train/acc", ([], []))
    return _finite(values[-1]) if values else None


def _stem(arch: str, family: str) -> str:
    """The architecture without its depth: ``resnet56`` -> ``resnet``, ``resnet56_4`` -> ``resnet_4`` (the width
    stays: other widths are other lines); ImageNet nets get their own stem."""
    try:
        stem = arch_spec(arch).line
    except ValueError:  # a net plugged in by class path (model.net_class): its class name is its line
        stem = arch or "?"
    return f"imagenet-{stem}" if family == "imagenet" else stem


def _value(text: str) -> str:
    value = json.loads(text)
    return "none" if value is None else str(value)


UNSET = json.dumps("unset")  # a setting some runs' configs lack (e.g. saved by an older version)


def name_variants(records: list[RunRecord]) -> None:
    """Name each run's variant and line from the settings that differ within the study (never from folders)."""
    present = [run for run in records if run.identity]
    # A pruned net is named by what it is (its parent, the size it kept, whether it was fine-tuned): the
    # settings only it has (init, pruning, its fine-tune recipe) must not rename every dense variant.
    configured = [run for run in present if "config.yaml" not in run.settings and not run.pruned]
    keys = sorted({key for run in configured for key in run.settings})

    def values(key: str) -> set[str]:
        # A plain net lacks model.shortcut (it does not apply): that absence is not a difference.
        return {
            run.settings.get(key, UNSET)
            for run in configured
            if key in run.settings or not (key == "model.shortcut" and not run.residual)
        }

    differing = [key for key in keys if key != "model.arch" and len(values(key)) > 1]
    short = {}
    for key in differing:
        tail = key.rsplit(".", 1)[-1]
        short[key] = tail if sum(k.rsplit(".", 1)[-1] == tail for k in differing) == 1 else key
    for run in present:
        if run.pruned:
            _name_pruned(run)
            continue
        if "config.yaml" in run.settings:
            extras = [f"[no config.yaml: {run.run_dir.parent.name}]"]
        else:
            extras = [
                f"{short[key]}={_value(run.settings.get(key, UNSET))}"
                for key in differing
                if key in run.settings or not (key == "model.shortcut" and not run.residual)
            ]
        suffix = (" " + ", ".join(extras)) if extras else ""
        run.variant = f"{run.arch}{suffix}"
        run.line = f"{_stem(run.arch or '?', run.family)}{suffix}"
        run.line_identity = (_stem(run.arch or "?", run.family), *(i for i in run.identity if i[0] != "model.arch"))


def _name_pruned(run: RunRecord) -> None:
    """``resnet56 pruned to 269,722`` (``, fine-tuned``); its line joins the sizes one parent was pruned to."""
    how = "pruned, fine-tuned" if run.finetuned else "pruned"
    scope = json.loads(run.settings.get("model.pruning.scope", '"global"'))
    extra = "" if scope == "global" else f", {scope} scope"
    run.variant = f"{run.arch} {how} to {run.params:,}{extra}" if run.params else f"{run.arch} {how}{extra}"
    run.line = f"{run.arch} {how}{extra}"
    sizeless = ("model.pruning.params", "model.pruning.sparsity")
    run.line_identity = (run.line, *(item for item in run.identity if item[0] not in sizeless))


def forget_settings_older_runs_lack(records: list[RunRecord]) -> None:
    """Leave out of every identity a setting that only some runs' configs have, all with one value.

    Such a key is an option added to the code after the older runs were made (the project's rule: a new
    option's default keeps the old behaviour), so it cannot tell the runs apart; without this, a study
    whose seeds straddle the change would split every variant in two. A key the newer runs set to
    different values still tells them apart.
    """
    configured = [run for run in records if run.identity and "config.yaml" not in run.settings]
    for key in sorted({key for run in configured for key in run.settings}):
        having = [run for run in configured if key in run.settings]
        if key in ("model.arch", "model.shortcut") or len(having) == len(configured):
            continue
        if len({run.settings[key] for run in having}) == 1:
            for run in having:
                del run.settings[key]
    for run in configured:
        run.identity = tuple(sorted(run.settings.items()))


def is_selection_run(run_dir: Path, root: Path) -> bool:
    """Whether a run found under ``root`` is one of a study's selection runs, which are never results.

    The sweep writes them to ``<study>/select/<variant>-<candidate>/seed<k>/`` (the results folder: the same under
    ``<results>/select/``) and ``selection.json`` beside ``select/``. A report of a folder above a study reads them
    too; counted, a selection run joined the final run of its seed and a candidate not chosen became a variant. A
    ``select`` folder holds selection runs when it is the root's own, when ``selection.json`` sits beside it, or
    when the run sits in it as the sweep lays them out (``select/<name>/seed<k>``: a sweep stopped before it wrote
    ``selection.json``). Deeper down, a folder of that name in another layout (``logs/select/version_0``) is no
    selection folder.
    """
    inside = run_dir.relative_to(root).parts[:-1]  # the folders between the root and the run
    for depth, name in enumerate(inside):
        folder = root.joinpath(*inside[: depth + 1])
        if name != SELECT_DIR:
            continue
        if depth == 0 or (folder.parent / SELECTION_FILE).is_file():
            return True
        if folder == run_dir.parent.parent and run_dir.name.startswith("seed"):
            return True
    return False


def collect_runs(
    root: str | Path, expected: list[tuple[str, int, Path]] | None = None, selected: tuple[str, ...] = ()
) -> list[RunRecord]:
    """Every run under ``root``, plus a ``missing`` record for each expected run without a directory.

    A study's selection runs (``<root>/select/``, or a study folder's below ``root``: ``is_selection_run``) are
    not results of the study and are left out; the
    settings each variant chose for itself (``selected``: ``selection.json``'s grid keys) do not name
    variants or split lines: they differ between variants by design.

    ``expected``: ``(variant, seed, run_dir)`` of every run a study plans. Without it, a seed that
    some run folders of a directory have and a sibling folder lacks is reported missing for that sibling
    (a guess about the layout, used only to list missing runs, never to group results).
    """
    root = Path(root)
    records = []
    for run_dir in find_run_dirs(root):
        if is_selection_run(run_dir, root):
            continue
        parent = run_dir.parent
        folder = parent.relative_to(root).as_posix() if root in parent.parents else parent.name
        records.append(read_run(run_dir, folder, selected))
    outside: list[RunRecord] = []
    if expected is not None:  # a study's report holds its planned runs only; the rest is listed, never counted
        planned_dirs = {Path(run_dir).resolve() for _, _, run_dir in expected}
        outside = [run for run in records if run.run_dir.resolve() not in planned_dirs]
        records = [run for run in records if run.run_dir.resolve() in planned_dirs]
        for run in outside:
            run.status = "outside"
    folders = {id(run): run.variant for run in records}
    forget_settings_older_runs_lack(records)
    name_variants(records)
    present = {run.run_dir.resolve() for run in records}
    records += outside
    if expected is not None:
        for variant, seed, run_dir in expected:
            if Path(run_dir).resolve() not in present and not variant.startswith(f"{SELECT_DIR}/"):
                records.append(RunRecord(variant, seed, Path(run_dir), "missing"))
    else:
        groups: dict[str, list[RunRecord]] = {}
        for run in records:
            groups.setdefault(str(Path(folders[id(run)]).parent), []).append(run)
        for siblings in groups.values():
            seeds = {run.seed for run in siblings if run.seed is not None}
            for folder in sorted({folders[id(run)] for run in siblings}):
                have = {run.seed for run in siblings if folders[id(run)] == folder}
                directory = next(run.run_dir.parent for run in siblings if folders[id(run)] == folder)
                if not all(run.run_dir.name.startswith("seed") for run in siblings):
                    continue  # not the sweep's <variant>/seed<k> layout: nothing to infer
                for seed in sorted(seeds - have):
                    records.append(RunRecord(folder, seed, directory / f"seed{seed}", "missing"))
    return sorted(records, key=lambda run: (run.variant, run.seed if run.seed is not None else -1))
