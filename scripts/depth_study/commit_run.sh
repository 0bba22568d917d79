#!/bin/bash
# Commit finished depth-study runs from the pinned worktree: copy each run's results folder (config, records,
# curves, lesions; never checkpoints) into this checkout, regenerate the arm's report and the planned analysis,
# check both, and commit only those files -- after checking that each run ended (finished, or diverged: the plan
# report lists it as left out of its test, with why), was not resumed, was trained
# at the arm's commit from a clean tree, and on the same kind of device (CPU or GPU) with the same packages as the
# arm's runs committed before it (an arm never mixes them).
#
#   scripts/depth_study/commit_run.sh "<message>" resnet56/seed2 [plain56/seed2 ...]   # WORKTREE=../study-depth
#   ARM=cifar10_depth_48ep scripts/depth_study/commit_run.sh "<message>" resnet20/seed0  # the 48-epoch arm
#
# All or nothing: every run is checked before any is copied, the files it writes must have no uncommitted changes
# when it starts, and if anything fails after the copy (a report, a --check, the commit) they are put back as they
# were -- a copied but uncommitted run would otherwise be skipped by run.sh as if it were committed.
set -euo pipefail
msg="$1"; shift
MAIN=$(cd "$(dirname "$0")/../.." && pwd)
WORKTREE=${WORKTREE:-$MAIN/../study-depth}
cd "$MAIN"
# One commit into this checkout at a time (scripts/study_driver/ takes the same lock): one's put-back could remove
# what another copied between its --check and its git add.
exec 9>"$(git rev-parse --git-common-dir)/study-commit.lock"
flock -n 9 || { echo "waiting for another commit into this checkout to end" >&2; flock 9; }
ARM=${ARM:-cifar10_depth_16ep}
R=docs/results/$ARM
PATHS=("$R" docs/results/cifar10_depth README.md docs/results.md)
if [ -n "$(git status --porcelain -- "${PATHS[@]}")" ]; then
  echo "uncommitted changes in what this commits (they would go into the run's commit):" >&2
  git status --short -- "${PATHS[@]}" >&2
  exit 1
fi
python - "$R" "$WORKTREE/$R" "$@" <<'PY'
import glob, json, sys

committed_dir, worktree_dir, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
GATED = ("torch", "torchvision", "lightning", "torchmetrics")


def kind(e):
    """(device kind, gated package versions) of a run: what one arm may not mix."""
    p = e["provenance"]
    return ("cpu" if p.get("device") == p.get("cpu") else "gpu", {k: p.get("packages", {}).get(k) for k in GATED})


before = {repr(kind(json.load(open(f)))) for f in glob.glob(f"{committed_dir}/*/seed*/efficiency.json")}
for run in runs:
    path = f"{worktree_dir}/{run}/efficiency.json"
    e = json.load(open(path))
    # A diverged run is committed too: the plan report lists it as left out of its test, with why (hidden, it
    # would read as a run not trained yet, and divergence that depends on the network biases the comparison).
    assert e.get("status") in ("finished", "diverged"), (path, e.get("status"))
    assert not e.get("resumed_at_steps"), (path, "resumed", e.get("resumed_at_steps"))
    p = e["provenance"]
    assert p["git_commit"].startswith("c687be2") and p["git_dirty"] is False, (path, p)
    assert not before or repr(kind(e)) in before, (path, "device/packages", kind(e), "arm:", sorted(before))
    print(path, e["status"], "test", e.get("test_acc"), "commit", p["git_commit"], "on", kind(e))
PY
committed=
put_back() {
  [ -n "$committed" ] && return
  echo "not committed: putting ${PATHS[*]} back as they were" >&2
  git reset -q -- "${PATHS[@]}" 2>/dev/null || true  # out of the index first (a failed commit): checkout reads it
  git checkout -q -- "${PATHS[@]}" 2>/dev/null || true
  git clean -fdq -- "${PATHS[@]}"
}
trap put_back EXIT
for r in "$@"; do
  mkdir -p "$R/$r"
  cp -a "$WORKTREE/$R/$r/." "$R/$r/"
done
[ -e "$R/results.json" ] || cp -a "$WORKTREE/$R/results.json" "$R/"   # an arm's first run: its results marker
python -m src.report "configs/studies/$ARM.yaml"
python -m src.report configs/studies/plans/cifar10_depth.yaml
python -m src.report "$R" --check
python -m src.report configs/studies/plans/cifar10_depth.yaml --check
git add -- "${PATHS[@]}"
git commit -q -m "$msg" -- "${PATHS[@]}"
committed=1
git log --oneline -1
