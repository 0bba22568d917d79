"""README.md and the guides in docs/: what they name must exist, what they link must resolve.

A guide that sends a user to a config, a command or a script that is not there is a broken promise; these
tests read every Markdown file a user reads first (README.md, docs/*.md; not the generated run records under
docs/results/) and check each name against the repository.
"""

from __future__ import annotations

import re
from itertools import product
from pathlib import Path

import pytest

from scripts.model_table import TARGET, current_table, model_table
from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
GUIDES = sorted((REPO_ROOT / "docs").glob("*.md"))
PAGES = [README, *GUIDES, REPO_ROOT / "CONTRIBUTING.md"]
IDS = [str(page.relative_to(REPO_ROOT)) for page in PAGES]

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)
CONFIG = re.compile(r"configs/[\w./{},-]+\.yaml")
MODULE = re.compile(r"(?:python |torchrun .*?)-m ((?:src|benchmarks)(?:\.\w+)+)")
IMPORT = re.compile(r"^\s*from (src(?:\.\w+)+) import", flags=re.M)
FILE = re.compile(r"(?<![\w./<])((?:scripts|benchmarks|src|tests)/[\w./-]+\.(?:py|sbatch|sh))")


def expand_braces(name: str) -> list[str]:
    """``configs/logger/{csv,wandb}.yaml`` -> both names (shell brace expansion, as the guides write them)."""
    parts = re.split(r"\{([^}]*)\}", name)
    choices = [[part] if i % 2 == 0 else part.split(",") for i, part in enumerate(parts)]
    return ["".join(pieces) for pieces in product(*choices)]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces -> -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor GitHub makes for the headings of a Markdown file (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    result = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            result.add(base if count == 0 else f"{base}-{count}")
            seen[base] = count + 1
    return result


def module_exists(dotted: str) -> bool:
    path = REPO_ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_readme_is_a_front_door():
    assert README.stat().st_size <= 12 * 1024, f"README.md is {README.stat().st_size:,} bytes; move detail to docs/"


def test_every_guide_is_linked_from_the_readme():
    linked = {target.split("#")[0] for target in LINK.findall(README.read_text())}
    assert {f"docs/{page.name}" for page in GUIDES} <= linked


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_links_resolve_to_files_and_headings(page):
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto: -- not checked offline
            continue
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading with anchor #{anchor} in {path.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_configs_named_exist(page):
    names = {name for found in CONFIG.findall(page.read_text()) for name in expand_braces(found)}
    placeholders = {name for name in names if Path(name).stem.isupper()}  # configs/studies/STUDY.yaml
    missing = sorted(name for name in names - placeholders if not (REPO_ROOT / name).is_file())
    assert not missing, f"{page.name} names configs that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_commands_and_imports_named_exist(page):
    text = page.read_text()
    modules = set(MODULE.findall(text)) | set(IMPORT.findall(text))
    missing = sorted(module for module in modules if not module_exists(module))
    assert not missing, f"{page.name} runs or imports modules that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_scripts_and_source_files_named_exist(page):
    names = set(FILE.findall(page.read_text()))
    missing = sorted(name for name in names if not (REPO_ROOT / name).is_file())
    assert not missing, f"{page.name} names files that do not exist: {missing}"


def test_the_checks_catch_what_they_should(tmp_path):
    """The patterns find the forms the guides use (a check that matches nothing passes vacuously)."""
    sample = (
        "python -m src.cli fit --config configs/quickstart.yaml --config configs/logger/{csv,wandb}.yaml\n"
        "torchrun --standalone --nproc-per-node 4 -m src.cli fit\n"
        "python scripts/slurm/render.py; python -m benchmarks.speed\n"
        "from src.models import build_model\n"
        "[a](docs/runs.md#resume-and-what-a-run-guarantees) `src/models/<family>.py`\n"
    )
    assert MODULE.findall(sample) == ["src.cli", "src.cli", "benchmarks.speed"]
    assert IMPORT.findall(sample) == ["src.models"]
    assert [n for f in CONFIG.findall(sample) for n in expand_braces(f)] == [
        "configs/quickstart.yaml", "configs/logger/csv.yaml", "configs/logger/wandb.yaml"
    ]  # fmt: skip
    assert FILE.findall(sample) == ["scripts/slurm/render.py"]  # a <placeholder> path is not a file name
    assert LINK.findall(sample) == ["docs/runs.md#resume-and-what-a-run-guarantees"]
    assert slug("Loggers: TensorBoard, CSV, W&B, MLflow") == "loggers-tensorboard-csv-wb-mlflow"
    assert slug("Reading `efficiency.json`") == "reading-efficiencyjson"
    assert not module_exists("src.no_such_command") and module_exists("src.data.export")


@pytest.mark.slow
def test_model_table_is_generated_from_the_code():
    assert current_table(TARGET.read_text()) == model_table(), "run: python scripts/model_table.py --update"


def test_readme_commands_use_shipped_configs():
    text = README.read_text()
    for config in ("configs/quickstart.yaml", "configs/cifar10/resnet20.yaml", "configs/studies/cifar10_ladder.yaml"):
        assert config in text and (REPO_ROOT / config).exists()
