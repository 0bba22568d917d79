"""Extra metrics from the config: ``model.metrics`` names torchmetrics classes, the classifier logs them.

A fork that wants a macro-averaged accuracy or an F1 score adds it in YAML, without editing the
LightningModule::

    model:
      metrics:
        acc_macro:
          class_path: torchmetrics.classification.MulticlassAccuracy
          init_args: {average: macro}

Each entry is logged as ``<stage>/<name>`` (``train/``, ``val/``, ``test/``) beside ``<stage>/acc``, so it reaches
TensorBoard, ``scalars.csv``, ``--checkpoint.monitor val/acc_macro`` and ``--efficiency.val_metric``.
``num_classes`` flows from the data into every metric whose constructor takes it (unless given), as it does
into the network. One metric object per stage: a stage's epoch value never mixes in another's batches.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import Any

from torchmetrics import Metric

from src.class_paths import config_class

STAGES = ("train", "val", "test")
RESERVED = {"loss", "acc"}  # logged by the classifier itself (acc_top<k> too)
BUILT_IN_KEY = re.compile(r"top\d+")  # the classifier's own accuracies are kept as <stage>_top<k>


def _metric_class(name: str, class_path: Any) -> type[Metric]:
    return config_class(
        class_path,
        Metric,
        "torchmetrics.Metric",
        f"model.metrics.{name}.class_path",
        "torchmetrics.classification.MulticlassAccuracy",
    )


def check_name(name: Any) -> str:
    """A metric's name becomes ``<stage>/<name>``: an identifier that does not shadow the classifier's own logs."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"model.metrics: a metric name must be an identifier such as 'acc_macro', got {name!r}")
    if name in RESERVED or name.startswith("acc_top"):
        raise ValueError(f"model.metrics: {name!r} is logged by the classifier already; choose another name")
    if BUILT_IN_KEY.fullmatch(name):
        # It would replace the classifier's own top-k accuracy, which is logged as <stage>/acc and recorded as
        # best_val_acc and test_acc: a macro accuracy named top1 became the run's test_acc.
        raise ValueError(
            f"model.metrics: {name!r} is the name of the classifier's own top-k accuracy (logged as acc, acc_top<k>); "
            "choose another name, such as 'acc_macro'"
        )
    return name


def plain_spec(spec: Any) -> Any:
    """``model.metrics`` as plain dicts: the CLI hands each ``{class_path, init_args}`` over as a jsonargparse
    Namespace with every constructor default filled in (``num_classes: None`` among them); plain data keeps
    the checkpoint's hyperparameters readable without jsonargparse and lets ``num_classes`` flow from the data."""
    if hasattr(spec, "as_dict"):
        spec = spec.as_dict()
    if isinstance(spec, Mapping):
        plain = {key: plain_spec(value) for key, value in spec.items()}
        if isinstance(plain.get("init_args"), dict) and plain["init_args"].get("num_classes", 0) is None:
            del plain["init_args"]["num_classes"]
        return plain
    return spec


def build_metrics(spec: Mapping[str, Any] | None, num_classes: int) -> dict[str, Metric]:
    """``{"<stage>_<name>": Metric}`` for every stage and configured metric (empty without ``model.metrics``)."""
    if not spec:
        return {}
    if not isinstance(spec, Mapping):
        raise ValueError(f"model.metrics must map names to {{class_path, init_args}}, got {spec!r}")
    metrics: dict[str, Metric] = {}
    for name, entry in spec.items():
        check_name(name)
        if not isinstance(entry, Mapping) or "class_path" not in entry:
            raise ValueError(f"model.metrics.{name}: give class_path (and optionally init_args), got {entry!r}")
        cls = _metric_class(name, entry["class_path"])
        args = dict(entry.get("init_args") or {})
        if "num_classes" in inspect.signature(cls).parameters:
            args.setdefault("num_classes", num_classes)
        for stage in STAGES:
            try:
                metrics[f"{stage}_{name}"] = cls(**args)
            except (TypeError, ValueError) as error:
                raise ValueError(f"model.metrics.{name}: {entry['class_path']}({args}) failed: {error}") from None
    return metrics
