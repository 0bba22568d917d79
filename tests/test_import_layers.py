"""The floors of ``src/`` hold (``.importlinter``): commands -> command support -> training -> models -> helpers,
and no import cycle in any package. ``lint-imports`` runs in .ci/run too; this keeps a plain ``pytest`` honest."""

from __future__ import annotations

import shutil
import subprocess

from tests.conftest import REPO_ROOT


def test_lint_imports_keeps_every_contract():
    command = shutil.which("lint-imports")
    assert command, "lint-imports is missing: pip install -e '.[dev]' installs import-linter"
    result = subprocess.run([command, "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout
