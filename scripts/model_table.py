"""Print (or refresh in docs/models.md) the table of every model's parameters and MACs.

The numbers come from the code -- ``build_model`` and ``src.models.complexity`` -- never from
hand typing; ``tests/test_docs.py`` fails when docs/models.md and this script disagree.

    python scripts/model_table.py           # print the Markdown table
    python scripts/model_table.py --update  # rewrite the table in docs/models.md
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from src.models import arch_spec, build_model, example_archs
from src.models import family as family_of
from src.models.complexity import count_macs, count_parameters

TARGET = Path(__file__).resolve().parents[1] / "docs" / "models.md"
START, END = "<!-- model-table:start -->", "<!-- model-table:end -->"


def _human(number: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if number >= scale:
            return f"{number / scale:.2f}{suffix}"
    return str(int(number))


SHORTCUTS = {"A": "A (identity + zero-pad)", "B": "B (projection)"}


def model_table() -> str:
    """Markdown table: CIFAR-sized models (cifar, wrn, preact) with 10 classes at 32x32, ImageNet ones with 1000
    classes at 224x224."""
    header = ["Model", "Family", "Shortcut", "Input", "Classes", "Parameters", "Parameters, option B"]
    header += ["MACs / sample", "FLOPs / sample"]
    rows = ["| " + " | ".join(header) + " |", "|---|---|---|---|---|---:|---:|---:|---:|"]
    for arch in example_archs():
        spec = arch_spec(arch)
        family, residual, size = spec.family, spec.residual, spec.input_size
        classes = 1000 if size >= 224 else 10  # the ImageNet-sized nets with ImageNet's classes
        with torch.device("meta"):  # shapes only: no memory even for ResNet-1202
            model = build_model(arch, classes)
            default = family_of(family).shortcut  # the option its residual nets use unless told otherwise
            option_b = build_model(arch, classes, shortcut="B") if default != "B" and residual else None
        macs = count_macs(model, (3, size, size))
        shortcut = "none" if not residual else SHORTCUTS.get(default, default)
        params_b = f"{count_parameters(option_b):,}" if option_b is not None else "—"
        rows.append(
            f"| `{arch}` | {family} | {shortcut} | 3x{size}x{size} | {classes} | {count_parameters(model):,} "
            f"| {params_b} | {_human(macs)} | {_human(2 * macs)} |"
        )
    return "\n".join(rows)


SECTION = re.compile(re.escape(START) + r"\n(.*?)" + re.escape(END), flags=re.S)


def current_table(text: str) -> str:
    """The table currently between the markers of docs/models.md."""
    match = SECTION.search(text)
    if match is None:
        raise SystemExit(f"{TARGET} has no {START} ... {END} section")
    return match.group(1).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help="rewrite the table section of docs/models.md")
    args = parser.parse_args()
    table = model_table()
    if not args.update:
        print(table)
        return
    text = TARGET.read_text()
    current_table(text)  # fails clearly if the markers are missing
    TARGET.write_text(SECTION.sub(lambda _: f"{START}\n{table}\n{END}", text))
    print(f"updated {TARGET}")


if __name__ == "__main__":
    main()
