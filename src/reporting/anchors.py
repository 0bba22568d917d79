"""The published anchors of the other families (``src.reporting.paper.PUBLISHED_ANCHORS``) on the report's figures.

Decided as He et al.'s Table 6 overlay is (``src.reporting.markdown.paper_overlay``), per family: with
``--paper auto`` a family's anchors (the Wide ResNets', the pre-activation ResNets') are drawn only when a
finished residual run of that family follows the protocol they were trained under (``paper.anchor_differences``:
CIFAR-10, all 50k training images, the official test split, the final model, the paper's budget at batch 128),
labelled "different protocol" when some runs of the family do not; ``force`` draws the anchors of every family
the study has, labelled; ``off`` never. A study without Wide or pre-activation runs gets nothing from here.
"""

from __future__ import annotations

from src.reporting.paper import PUBLISHED_ANCHORS, PublishedResult
from src.reporting.records import RunRecord

FAMILY_NAMES = {"wrn": "Wide ResNet", "preact": "pre-activation ResNet"}


def anchor_overlay(records: list[RunRecord], mode: str) -> tuple[list[tuple[PublishedResult, str]], list[str]]:
    """``([(anchor, label)], lines)``: the anchors to draw (label "" or "different protocol") and why, in words."""
    if mode == "off":
        return [], []
    finished = [run for run in records if run.status == "finished"]
    chosen: list[tuple[PublishedResult, str]] = []
    why: list[str] = []
    for family, name in FAMILY_NAMES.items():
        runs = [run for run in finished if run.family == family and run.residual]
        if not runs:
            continue
        anchors = [anchor for anchor in PUBLISHED_ANCHORS if anchor.family == family]
        matching = [run for run in runs if not run.anchor_differences]
        differing = sorted({reason for run in runs for reason in run.anchor_differences})
        listed = ", ".join(f"{a.label} ({a.paper_params}) {a.test_error:.2f}%" for a in anchors)
        citation = anchors[0].citation
        if not matching and mode != "force":
            why.append(
                f"{citation} ({listed}) is not overlaid: no finished {name} run follows its protocol "
                f"({'; '.join(differing)}). `--paper force` draws it anyway."
            )
            continue
        label = "" if matching and not differing else "different protocol"
        chosen += [(anchor, label) for anchor in anchors]
        text = f"Black stars: {citation}, CIFAR-10 test error of {listed}; trained with {anchors[0].protocol}."
        if label:
            text += (
                f" **Different protocol**: some or all {name} runs here differ from it ({'; '.join(differing)}), "
                "so the distance to the stars is not a reproduction gap."
            )
        else:
            text += f" The {len(matching)} finished {name} runs compared follow that protocol."
        why.append(text)
    return chosen, why


def anchor_data(chosen: list[tuple[PublishedResult, str]]) -> list[dict]:
    """The drawn anchors as numbers, for ``figures.json``."""
    return [
        {"arch": a.arch, "label": a.label, "params": a.params, "macs": a.macs, "test_error": a.test_error,
         "citation": a.citation, "overlay": label or "same protocol"}
        for a, label in chosen
    ]  # fmt: skip
