"""Git is read in one place: ``src/callbacks/provenance.py``. CI's archive pass (``.ci/run``) relies on it.

A source archive ("Download ZIP", a release tarball) differs from a clean clone only by ``.git``, so only code that
reads git can behave differently there, and only tests that look at what it read can tell: CI runs again, from an
archive, exactly the test files that mention git or provenance. A second reader of git elsewhere in ``src`` would
escape that selection; this test names it instead.
"""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT

# A git command run by a subprocess, or a path into a repository's .git folder.
READS_GIT = re.compile(r"""["']git["']|rev-parse|ls-files|["']\.git["']|/\.git\b""")
THE_READER = "src/callbacks/provenance.py"


def test_only_provenance_reads_git():
    readers = sorted(
        path.relative_to(REPO_ROOT).as_posix()
        for path in (REPO_ROOT / "src").rglob("*.py")
        if READS_GIT.search(path.read_text())
    )
    assert readers == [THE_READER], (
        "code that reads git outside src/callbacks/provenance.py: move it there, or make .ci/run's archive pass "
        f"select the tests that look at what it reads: {readers}"
    )


def test_the_archive_pass_selects_the_provenance_tests():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    workflow = (REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text()
    selection = 'grep -l -E "git|provenance" tests/test_*.py'
    assert selection in ci and selection in workflow  # the same selection in both, as this file's docstring says
    tests = {
        path.name for path in (REPO_ROOT / "tests").glob("test_*.py") if re.search("git|provenance", path.read_text())
    }
    assert {"test_efficiency_callback.py", "test_efficiency_resume.py", "test_git_readers.py"} <= tests
