#!/bin/bash
# Commit finished depth-study runs from the pinned worktree: copy each run's results folder (config, records,
# curves, lesions; never checkpoints) into this checkout, regenerate the arm's report and the planned analysis,
# check both, and commit only those files -- after checking that each run finished, was not resumed, and was
# trained at the arm's commit from a clean tree.
#
#   scripts/depth_study/commit_run.sh "<message>" resnet56/seed2 [plain56/seed2 ...]   # WORKTREE=../study-depth
#   ARM=cifar10_depth_48ep scripts/depth_study/commit_run.sh "<message>" resnet20/seed0  # the 48-epoch arm
set -euo pipefail
msg="$1"; shift
MAIN=$(cd "$(dirname "$0")/../.." && pwd)
WORKTREE=${WORKTREE:-$MAIN/../study-depth}
cd "$MAIN"
ARM=${ARM:-cifar10_depth_16ep}
R=docs/results/$ARM
for r in "$@"; do
  src=$WORKTREE/$R/$r
  python - "$src/efficiency.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
assert e.get("status") == "finished", e.get("status")
assert not e.get("resumed_at_steps"), e.get("resumed_at_steps")
assert e["provenance"]["git_commit"].startswith("c687be2") and e["provenance"]["git_dirty"] is False, e["provenance"]
print(sys.argv[1], "test", e.get("test_acc"), "commit", e["provenance"]["git_commit"])
PY
  mkdir -p "$R/$r"
  cp -a "$src/." "$R/$r/"
done
python -m src.report "configs/studies/$ARM.yaml"
python -m src.report configs/studies/plans/cifar10_depth.yaml
python -m src.report "$R" --check
python -m src.report configs/studies/plans/cifar10_depth.yaml --check
git add "$R" docs/results/cifar10_depth README.md docs/results.md
git commit -q -m "$msg" -- "$R" docs/results/cifar10_depth README.md docs/results.md
git log --oneline -1
