"""What a run was trained and tested on, in words: the budget/protocol line of a study report.

Why from the resolved config *and* the run's records: the config says what was asked (data set,
optimizer, schedule), ``efficiency.json`` and ``data.json`` say what happened (precision, steps
trained, test images, which checkpoint was tested, split sizes). A reader comparing numbers with
a paper needs both, and a report that only says "batch 128, 64k steps" hides a held-out test or a
best-by-validation checkpoint.
"""

from __future__ import annotations

from typing import Any


def nested(config: dict | None, *keys: str) -> Any:
    """``config[k1][k2]...``, None where a level is missing."""
    value: Any = config or {}
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _init(section: Any) -> dict:
    if not isinstance(section, dict):
        return {}
    init = section.get("init_args", section)
    return init if isinstance(init, dict) else {}


def _class_name(section: Any) -> str | None:
    path = section.get("class_path") if isinstance(section, dict) else None
    return str(path).rsplit(".", 1)[-1] if path else None


FINAL_WEIGHTS = "final weights (no checkpoint loaded)"
# What a test scored when validation chose nothing: the weights as training left them (He et al. report these).
NOT_CHOSEN = ("final checkpoint", "last checkpoint", FINAL_WEIGHTS)


def test_protocol(config: dict | None, report: dict, data: dict | None) -> tuple[str, str]:
    """``(test split, checkpoint)``: e.g. ("official test split", "final checkpoint")."""
    init = _init(nested(config, "data"))
    data_class = _class_name(nested(config, "data")) or str(report.get("data") or "")
    source = (data or {}).get("test_source")
    if report.get("test_on_val") or init.get("test_on_val") or source == "val":
        split = "held-out validation split (also picks the checkpoint)"
    elif "CIFAR" in data_class:
        split = "official test split"
    elif source == "folder":
        split = "test/ folder"
    elif str(source or "").startswith("split of train"):
        split = f"test {source} (held out before validation; never selects)"
    elif "Synthetic" in data_class:
        split = "synthetic test split"
    else:
        split = "test split"
    ckpt = report.get("test_ckpt_path")
    monitor = nested(config, "checkpoint", "monitor") if config and "checkpoint" in config else "val/acc"
    if report.get("test_acc") is None:
        checkpoint = "not tested"
    elif _tested_in_memory(report):
        checkpoint = FINAL_WEIGHTS
    elif ckpt and "last" in str(ckpt).rsplit("/", 1)[-1]:
        checkpoint = "last checkpoint"
    elif monitor:
        checkpoint = f"best checkpoint by {monitor}"
    else:
        checkpoint = "final checkpoint"
    return split, checkpoint


def _tested_in_memory(report: dict) -> bool:
    """Whether the test scored the model as the fit left it: ``test_ckpt_path`` recorded as null.

    The test after fit loads the best checkpoint by validation when there is one; without one (a fit with
    ``--trainer.limit_val_batches 0`` saves none) it tests the final weights and records no path. A record
    without the field (older than it) says nothing either way: the config's monitor is the best guess there.
    """
    return "test_ckpt_path" in report and report["test_ckpt_path"] is None


def describe(config: dict | None, report: dict, data: dict | None) -> dict[str, Any]:
    """The run's data set, splits, test protocol, optimizer, LR, schedule, precision and length, as short strings."""
    data_section = nested(config, "data")
    init = _init(data_section)
    data_class = _class_name(data_section) or report.get("data")
    dataset = init.get("dataset") or report.get("dataset")
    location = (data or {}).get("root") or init.get("root") or init.get("data_dir")
    name = "/".join(str(part) for part in (data_class, dataset) if part) or "not recorded"
    if location:
        name += f" at {location}"
    sizes = (data or {}).get("split_sizes")
    if isinstance(sizes, dict) and sizes:
        splits = ", ".join(f"{split} {count:,}" for split, count in sizes.items())
    else:
        parts = [f"{key.split('_')[0]} {init[key]:,}" for key in ("train_size", "val_size", "test_size")
                 if isinstance(init.get(key), int)]  # fmt: skip
        if "CIFAR" in str(data_class) and isinstance(init.get("val_size"), int):
            parts = [f"val {init['val_size']:,} held out of the training images"]
        splits = ", ".join(parts) or "not recorded"
    if report.get("test_samples"):
        splits += f"; {report['test_samples']:,} test images scored"
    test_split, checkpoint = test_protocol(config, report, data)
    optimizer = _class_name(nested(config, "model", "optimizer")) or report.get("optimizer")
    opt_init = _init(nested(config, "model", "optimizer"))
    lr = opt_init.get("lr", report.get("lr"))
    decay = opt_init.get("weight_decay", report.get("weight_decay"))
    schedule_section = nested(config, "model", "lr_scheduler")
    schedule = _class_name(schedule_section) or report.get("lr_scheduler") or "constant"
    sched_init = {k: v for k, v in _init(schedule_section).items() if k in ("milestones", "gamma", "warmup_steps")}
    if sched_init:
        schedule += " (" + ", ".join(f"{k} {v}" for k, v in sched_init.items()) + ")"
    max_steps = nested(config, "trainer", "max_steps")
    max_epochs = nested(config, "trainer", "max_epochs")
    length = ", ".join(
        part
        for part in (
            f"max_steps {max_steps}" if max_steps not in (None, -1) else "",
            f"max_epochs {max_epochs}" if max_epochs is not None else "",
            f"{report['global_step']} steps trained" if report.get("global_step") is not None else "",
        )
        if part
    )
    batch = report.get("global_batch_size") or init.get("batch_size")
    return {
        "data": name,
        "splits": splits,
        "test": f"{test_split}, {checkpoint}",
        "optimizer": f"{optimizer or 'not recorded'}, lr {lr}, weight decay {decay}",
        "schedule": schedule,
        "precision": str(report.get("precision") or nested(config, "trainer", "precision") or "not recorded"),
        "length": f"{length or 'not recorded'}, global batch {batch}",
    }


def protocol_line(description: dict[str, Any]) -> str:
    """One line for report.md: data; splits; test protocol; optimizer; schedule; precision; length."""
    return "; ".join(f"{key}: {value}" for key, value in description.items())
