#!/bin/bash
# The depth study's 16-epoch arm as it is run on a 2-core CPU: one run at a time, from a git worktree pinned to the
# arm's commit (one code version per arm: the plan report's --check fails otherwise), in the planned order (the
# 20/56 pairs seed by seed first, then the 32/44 nets), skipping every run already committed in the main checkout.
# After each plain20 / plain56 / ResNet-56 run: its block lesions (the plan's exploratory controls) on the 5,000
# validation images with the best-by-validation checkpoint it was tested with -- right away, because checkpoints
# stay out of git and do not outlive the machine. Commit each finished run with scripts/depth_study/commit_run.sh.
#
#   scripts/depth_study/run.sh [WORKTREE]        # default ../study-depth; touch STOP_STUDY there to stop after a run
#
# A new machine: the script makes the worktree (at c687be2) and its virtual environment when they are missing.
set -uo pipefail
MAIN=$(cd "$(dirname "$0")/../.." && pwd)
WORKTREE=${1:-$MAIN/../study-depth}
COMMIT=c687be2
R=docs/results/cifar10_depth_16ep
if [ ! -d "$WORKTREE" ]; then
  git -C "$MAIN" worktree add "$WORKTREE" "$COMMIT" || exit 1
fi
cd "$WORKTREE" || exit 1
[ "$(git rev-parse --short=7 HEAD)" = "$COMMIT" ] || { echo "$WORKTREE is not at $COMMIT"; exit 1; }
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv && .venv/bin/pip install -q -e ".[dev]" || exit 1
fi
# shellcheck disable=SC1091
. .venv/bin/activate

lesion() {
  local arch=$1 seed=$2 run=lightning_logs/cifar10_depth_16ep/$1/seed$2 res=$R/$1/seed$2 k ckpt
  case $arch in plain20|plain56|resnet56) ;; *) return;; esac
  [ -e "$res/efficiency.json" ] && [ -e "$run/efficiency.json" ] || return
  [ -e "$res/lesion/lesion.csv" ] && return
  ckpt=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['test_ckpt_path'])" "$run/efficiency.json")
  case $arch in *56) k="1 2 4 8 12";; *) k="1 2 4";; esac
  echo "$(date -u +%FT%TZ) lesion $arch seed$seed ($ckpt)"
  # shellcheck disable=SC2086
  python -m src.lesion "$run/$ckpt" --split val --k $k --trials 3 --seed 0 --out "$res/lesion" \
    > "$run/lesion.log" 2>&1
  echo "$(date -u +%FT%TZ) lesion $arch seed$seed rc=$?"
}

ORDER=(
  "resnet20 0" "plain20 0" "resnet56 0" "plain56 0" "resnet20 1" "plain20 1" "resnet56 1" "plain56 1"
  "resnet20 2" "plain20 2" "resnet20 3" "plain20 3" "resnet20 4" "plain20 4"
  "resnet56 2" "plain56 2" "resnet20 5" "plain20 5" "resnet56 3" "plain56 3" "resnet20 6" "plain20 6"
  "resnet20 7" "resnet56 4" "plain56 4" "resnet56 5" "plain56 5" "resnet56 6" "plain56 6" "resnet56 7"
  "resnet32 0" "plain32 0" "resnet44 0" "plain44 0" "resnet32 1" "plain32 1" "resnet44 1" "plain44 1"
  "resnet32 2" "plain32 2" "resnet44 2" "plain44 2"
)
for spec in "${ORDER[@]}"; do
  [ -e STOP_STUDY ] && { echo "$(date -u +%FT%TZ) STOP_STUDY: stopping"; rm -f STOP_STUDY; break; }
  read -r arch seed <<< "$spec"
  [ -e "$MAIN/$R/$arch/seed$seed/efficiency.json" ] && continue   # committed: done
  echo "$(date -u +%FT%TZ) start $arch seed$seed"
  python -m src.sweep configs/studies/cifar10_depth_16ep.yaml --arch "$arch" --seed "$seed"
  echo "$(date -u +%FT%TZ) end $arch seed$seed rc=$?"
  lesion "$arch" "$seed"
done
