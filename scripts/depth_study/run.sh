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
#   STUDY_UNTIL=02:40 scripts/depth_study/run.sh # and start or keep no run that will not have ended by then
#
# STUDY_UNTIL (any date `date -d` reads) is for a machine that goes away: a run cut off with it is lost (checkpoints do
# not outlive the machine) and only restarts from nothing. Each run's own ETA decides, read from its log during its
# first minutes (plus a margin for its test, clean-train score and lesion): a run that will not end in time is stopped
# and moved aside, and the driver goes on to the next one that may (a shorter net), skipping nets that did not fit.
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
# The arms train in bf16 on the CPU. Where PyTorch has no bf16 kernels for the CPU (no AVX-512: AMD Zen 2/3), bf16 is
# emulated about 11x slower than fp32 (BENCHMARKS.md): a ResNet-56 run would take a day and end with the machine. The
# arms' precision is part of their recipe, so the study waits for another machine (src/cli_support/cpu_precision.py).
if ! python -c "import sys, torch; sys.exit(0 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else 1)"; then
  echo "$(date -u +%FT%TZ) this CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)) has no bf16" \
       "kernels in PyTorch (no AVX-512): the arms' bf16 runs would take ~11x their time here; not starting any"
  exit 2
fi

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
  echo "$(date -u +%FT%TZ) $run did not finish training (status: $status): moved to $aside (it starts from nothing)"
}

UNTIL=
if [ -n "${STUDY_UNTIL:-}" ]; then
  UNTIL=$(date -u -d "$STUDY_UNTIL" +%s) || { echo "STUDY_UNTIL=$STUDY_UNTIL: not a date (e.g. 02:40)"; exit 1; }
  echo "$(date -u +%FT%TZ) STUDY_UNTIL: no run that will not have ended by $(date -u -d "@$UNTIL" +%FT%TZ)"
fi
CHECK_FOR=600   # seconds of a run during which its ETA may still stop it; later it is kept whatever happens
MARGIN=600      # seconds after training: test, clean-train score, lesion (~8 min for a 56-layer net on 2 cores)

# The ETA (seconds) of the newest "[train] ... eta H:MM:SS" line of a run's log (src/callbacks/progress.py) after
# byte OFFSET (the sweep appends: an earlier attempt's lines come first).
eta_seconds() {
  python - "$1" "$2" <<'PY'
import re, sys
eta = None
log = open(sys.argv[1], errors="replace")
log.seek(int(sys.argv[2]))
for line in log:
    found = re.search(r"^\[train\] .* eta (?:(\d+) days?, )?(\d+):(\d\d):(\d\d)", line)
    if found:
        days, hours, minutes, seconds = (int(part or 0) for part in found.groups())
        eta = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
sys.exit(1) if eta is None else print(eta)
PY
}

# Train one run; with STUDY_UNTIL, stop it during its first CHECK_FOR seconds if it will not end in time (and say so in
# STOPPED_FOR_TIME).
train() {
  local study=$1 arch=$2 seed=$3 log=lightning_logs/$1/sweep_logs/$2_seed$3.log pid waited=0 eta end offset
  offset=$(stat -c %s "$log" 2>/dev/null || echo 0)
  STOPPED_FOR_TIME=
  python -m src.sweep "configs/studies/$study.yaml" --arch "$arch" --seed "$seed" &
  pid=$!
  while [ -n "$UNTIL" ] && [ "$waited" -lt "$CHECK_FOR" ] && kill -0 "$pid" 2>/dev/null; do
    sleep 30; waited=$((waited + 30))
    [ "$waited" -ge 180 ] || continue   # the first steps' rate says little
    eta=$(eta_seconds "$log" "$offset") || continue
    end=$(( $(date +%s) + eta * 115 / 100 + MARGIN ))
    if [ "$end" -gt "$UNTIL" ]; then
      echo "$(date -u +%FT%TZ) $study $arch seed$seed would end ~$(date -u -d "@$end" +%FT%TZ), after STUDY_UNTIL: stopping it"
      kill -TERM "$pid"; wait "$pid"
      STOPPED_FOR_TIME=1
      return
    fi
  done
  wait "$pid"
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
declare -A DID_NOT_FIT   # "study/arch" -> seconds that were left when a run of it would not end in time
for spec in "${ORDER[@]}"; do
  [ -e STOP_STUDY ] && { echo "$(date -u +%FT%TZ) STOP_STUDY: stopping"; rm -f STOP_STUDY; break; }
  read -r study arch seed <<< "$spec"
  [ -e "$MAIN/docs/results/$study/$arch/seed$seed/efficiency.json" ] && continue   # committed: done
  if [ -n "$UNTIL" ]; then
    left=$(( UNTIL - $(date +%s) ))
    [ "$left" -gt $((MARGIN + 300)) ] || { echo "$(date -u +%FT%TZ) STUDY_UNTIL: too little time left for a run"; break; }
    no_fit=${DID_NOT_FIT["$study/$arch"]:-}
    [ -n "$no_fit" ] && [ "$left" -le "$no_fit" ] && continue   # a run of this net did not fit in more time than this
  fi
  fresh_start "$study" "$arch" "$seed" || exit 1
  echo "$(date -u +%FT%TZ) start $study $arch seed$seed"
  train "$study" "$arch" "$seed"
  rc=$?
  if [ -n "$STOPPED_FOR_TIME" ]; then
    DID_NOT_FIT["$study/$arch"]=$left
    fresh_start "$study" "$arch" "$seed" || exit 1   # moved aside now: the next session starts it from nothing
    continue
  fi
  echo "$(date -u +%FT%TZ) end $study $arch seed$seed rc=$rc"
  lesion "$study" "$arch" "$seed"
done
