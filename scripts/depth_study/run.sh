#!/bin/bash
# The depth study as it is run on a 2-core CPU: one run at a time, from a git worktree pinned to the arms' commit
# (one code version per arm: the plan report's --check fails otherwise), in the planned order -- the 16-epoch arm
# (the 20/56 pairs seed by seed first, then the 32/44 nets), then the 48-epoch arm (the 20/56 pairs, seed by seed) --
# skipping every run already committed in the main checkout.
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
  local study=$1 arch=$2 seed=$3 run=lightning_logs/$1/$2/seed$3 res=docs/results/$1/$2/seed$3 k ckpt
  case $arch in plain20|plain56|resnet56) ;; *) return;; esac
  [ -e "$res/efficiency.json" ] && [ -e "$run/efficiency.json" ] || return
  [ -e "$res/lesion/lesion.csv" ] && return
  ckpt=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['test_ckpt_path'])" "$run/efficiency.json")
  case $arch in *56) k="1 2 4 8 12";; *) k="1 2 4";; esac
  echo "$(date -u +%FT%TZ) lesion $study $arch seed$seed ($ckpt)"
  # shellcheck disable=SC2086
  python -m src.lesion "$run/$ckpt" --split val --k $k --trials 3 --seed 0 --out "$res/lesion" \
    > "$run/lesion.log" 2>&1
  echo "$(date -u +%FT%TZ) lesion $study $arch seed$seed rc=$?"
}

# A run an earlier session started and did not finish training (the machine went, or the session stopped it for
# CI) would be resumed by the sweep from its last checkpoint; commit_run.sh refuses a resumed run (not one clean
# run of the arm), so such a run starts again from nothing, its files moved aside, never deleted.
fresh_start() {
  local run=lightning_logs/$1/$2/seed$3 status aside
  [ -d "$run" ] || return 0
  status=$(python -c "import json,sys; print(json.load(open(sys.argv[1])).get('status'))" "$run/efficiency.json" \
           2>/dev/null || echo none)
  case $status in finished|trained|test_failed|diverged) return 0;; esac   # training ended: the sweep knows what to do
  aside=lightning_logs/$1/.interrupted/$2_seed$3_$(date -u +%Y%m%dT%H%M%SZ)
  mkdir -p "$(dirname "$aside")" && mv "$run" "$aside" || return 1
  echo "$(date -u +%FT%TZ) $run did not finish training (status: $status): moved to $aside, starting it again"
}

E16=cifar10_depth_16ep
E48=cifar10_depth_48ep
ORDER=(
  "$E16 resnet20 0" "$E16 plain20 0" "$E16 resnet56 0" "$E16 plain56 0" "$E16 resnet20 1" "$E16 plain20 1"
  "$E16 resnet56 1" "$E16 plain56 1" "$E16 resnet20 2" "$E16 plain20 2" "$E16 resnet20 3" "$E16 plain20 3"
  "$E16 resnet20 4" "$E16 plain20 4" "$E16 resnet56 2" "$E16 plain56 2" "$E16 resnet20 5" "$E16 plain20 5"
  "$E16 resnet56 3" "$E16 plain56 3" "$E16 resnet20 6" "$E16 plain20 6" "$E16 resnet20 7" "$E16 resnet56 4"
  "$E16 plain56 4" "$E16 resnet56 5" "$E16 plain56 5" "$E16 resnet56 6" "$E16 plain56 6" "$E16 resnet56 7"
  "$E16 resnet32 0" "$E16 plain32 0" "$E16 resnet44 0" "$E16 plain44 0" "$E16 resnet32 1" "$E16 plain32 1"
  "$E16 resnet44 1" "$E16 plain44 1" "$E16 resnet32 2" "$E16 plain32 2" "$E16 resnet44 2" "$E16 plain44 2"
  "$E48 resnet20 0" "$E48 plain20 0" "$E48 resnet56 0" "$E48 plain56 0" "$E48 resnet20 1" "$E48 plain20 1"
  "$E48 resnet56 1" "$E48 plain56 1" "$E48 resnet20 2" "$E48 plain20 2" "$E48 resnet56 2" "$E48 plain56 2"
)
for spec in "${ORDER[@]}"; do
  [ -e STOP_STUDY ] && { echo "$(date -u +%FT%TZ) STOP_STUDY: stopping"; rm -f STOP_STUDY; break; }
  read -r study arch seed <<< "$spec"
  [ -e "$MAIN/docs/results/$study/$arch/seed$seed/efficiency.json" ] && continue   # committed: done
  fresh_start "$study" "$arch" "$seed" || exit 1
  echo "$(date -u +%FT%TZ) start $study $arch seed$seed"
  python -m src.sweep "configs/studies/$study.yaml" --arch "$arch" --seed "$seed"
  echo "$(date -u +%FT%TZ) end $study $arch seed$seed rc=$?"
  lesion "$study" "$arch" "$seed"
done
