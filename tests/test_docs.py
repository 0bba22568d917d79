"""README facts that come from code must match the code."""

from __future__ import annotations

from scripts.model_table import README, model_table, readme_table
from tests.conftest import REPO_ROOT


def test_readme_model_table_is_generated_from_the_code():
    assert readme_table(README.read_text()) == model_table(), "run: python scripts/model_table.py --update-readme"


def test_readme_commands_use_shipped_configs():
    text = README.read_text()
    for config in ("configs/quickstart.yaml", "configs/cifar10/resnet20.yaml", "configs/cifar100/resnet20.yaml"):
        assert config in text and (REPO_ROOT / config).exists()
