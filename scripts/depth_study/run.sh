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
# The packages every committed run of the arms was trained with (their efficiency.json provenance): a new machine
# gets the same, and a machine that has others is refused (commit_run.sh would refuse its runs after hours).
PINS="torch==2.14.1 torchvision==0.29.1 lightning==2.6.6 torchmetrics==1.9.0"
if [ ! -x .venv/bin/python ]; then
  # shellcheck disable=SC2086
  python3 -m venv .venv && .venv/bin/pip install -q $PINS -e ".[dev]" || exit 1
fi
# shellcheck disable=SC1091
. .venv/bin/activate
if ! python - $PINS <<'PY'
import sys
from importlib.metadata import version
pins = dict(pin.split("==") for pin in sys.argv[1:])
have = {name: version(name).split("+")[0] for name in pins}  # 2.14.1+cu130 is torch 2.14.1 (a build tag)
wrong = [f"{name} {have[name]} (the arms: {pins[name]})" for name in pins if have[name] != pins[name]]
sys.exit(print("this worktree's .venv has", ", ".join(wrong), "- remove .venv to rebuild it pinned") if wrong else 0)
PY
then
  exit 2
fi
# The arms are CPU runs (provenance: a CPU as the device): a GPU here would take them over (accelerator: auto) and mix
# devices within an arm. A GPU arm needs its own plan amendment and driver.
export CUDA_VISIBLE_DEVICES=
# The arms train in bf16 on the CPU. Where PyTorch has no bf16 kernels for the CPU (no AVX-512: AMD Zen 2/3), bf16 is
# emulated about 11x slower than fp32 (BENCHMARKS.md): a ResNet-56 run would take a day and end with the machine. The
# arms' precision is part of their recipe, so the study waits for another machine (src/cli_support/cpu_precision.py).
if ! python -c "import sys, torch; sys.exit(0 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else 1)"; then
  echo "$(date -u +%FT%TZ) this CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)) has no bf16" \
       "kernels in PyTorch (no AVX-512): the arms' bf16 runs would take ~11x their time here; not starting any"
  exit 2
fi

# The driver's children (a sweep, a lesion) are stopped with it: killed by its pid, the driver left them running, and
# the next session moved the live run aside and started the same run beside it (an audit).
CHILD=
stop_children() {
  echo "$(date -u +%FT%TZ) driver stopped by a signal: stopping its child ${CHILD:-none}"
  [ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null && wait "$CHILD"
  exit 143
}
trap stop_children TERM INT HUP
# in_background CMD...: run CMD as the current child and wait for it (a signal to the driver reaches it at once).
in_background() {
  "$@" &
  CHILD=$!
  wait "$CHILD"
  local rc=$?
  CHILD=
  return $rc
}

lesion() {
  local study=$1 arch=$2 seed=$3 run=lightning_logs/$1/$2/seed$3 res=docs/results/$1/$2/seed$3 k ckpt
  case $arch in plain20|plain56|resnet56) ;; *) return;; esac
  [ -e "$res/efficiency.json" ] && [ -e "$run/efficiency.json" ] || return
  # lesion.png is the last file src.lesion writes: a folder without it holds a lesion cut off while writing (it
  # was skipped as done when lesion.csv, the first file, existed). Moved aside, never deleted; then made again.
  if [ -d "$res/lesion" ] && [ ! -e "$res/lesion/lesion.png" ]; then
    mkdir -p "lightning_logs/$study/.interrupted" &&
      mv "$res/lesion" "lightning_logs/$study/.interrupted/${arch}_seed${seed}_lesion_$(date -u +%Y%m%dT%H%M%SZ)" ||
      return
  fi
  [ -e "$res/lesion/lesion.png" ] && return
  ckpt=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['test_ckpt_path'])" "$run/efficiency.json")
  case $arch in *56) k="1 2 4 8 12";; *) k="1 2 4";; esac
  echo "$(date -u +%FT%TZ) lesion $study $arch seed$seed ($ckpt)"
  # shellcheck disable=SC2086
  in_background python -m src.lesion "$run/$ckpt" --split val --k $k --trials 3 --seed 0 --out "$res/lesion" \
    > "$run/lesion.log" 2>&1
  echo "$(date -u +%FT%TZ) lesion $study $arch seed$seed rc=$?"
}

# A run an earlier session started and did not finish (the machine went, or the session stopped it) would be resumed
# by the sweep from its last checkpoint; commit_run.sh refuses a resumed run (not one clean run of the arm), so such a
# run starts again from nothing, its files (and a results copy the sweep exported) moved aside, never deleted. That
# holds for a run stopped in its test too (trained / test_failed: the sweep would resume it) and for one finished
# after such a resume. A run whose lock is held is being written by a process of its own: left alone, and the driver
# stops (two trainings of one run would write into one folder).
fresh_start() {
  local run=lightning_logs/$1/$2/seed$3 res=docs/results/$1/$2/seed$3 state aside
  [ -d "$run" ] || return 0
  if [ -e "$run/run.lock" ] && ! flock -n "$run/run.lock" true; then
    echo "$(date -u +%FT%TZ) $run is in use by another process (its run.lock is held): not touched; stopping"
    return 1
  fi
  state=$(python -c "import json,sys; e=json.load(open(sys.argv[1])); print(e.get('status'), bool(e.get('resumed_at_steps')))" \
          "$run/efficiency.json" 2>/dev/null || echo "none False")
  case $state in "finished False"|"diverged "*) return 0;; esac   # a clean result, or a diverged one: the sweep skips it
  aside=lightning_logs/$1/.interrupted/$2_seed$3_$(date -u +%Y%m%dT%H%M%SZ)
  mkdir -p "$aside" && mv "$run" "$aside/run" || return 1
  if [ -d "$res" ]; then mv "$res" "$aside/results" || return 1; fi
  echo "$(date -u +%FT%TZ) $run is no clean finished run (status, resumed: $state): moved to $aside (it starts from nothing)"
}

UNTIL=
if [ -n "${STUDY_UNTIL:-}" ]; then
  UNTIL=$(date -u -d "$STUDY_UNTIL" +%s) || { echo "STUDY_UNTIL=$STUDY_UNTIL: not a date (e.g. 02:40)"; exit 1; }
  [ "$UNTIL" -gt "$(date +%s)" ] || {
    echo "STUDY_UNTIL=$STUDY_UNTIL is $(date -u -d "@$UNTIL" +%FT%TZ), already past (read as UTC; e.g. 'tomorrow 00:30')"
    exit 1
  }
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
  CHILD=$pid
  while [ -n "$UNTIL" ] && [ "$waited" -lt "$CHECK_FOR" ] && kill -0 "$pid" 2>/dev/null; do
    sleep 30 & wait $!; waited=$((waited + 30))   # in the background: a signal is handled at once
    [ "$waited" -ge 180 ] || continue   # the first steps' rate says little
    eta=$(eta_seconds "$log" "$offset") || continue
    end=$(( $(date +%s) + eta * 115 / 100 + MARGIN ))
    if [ "$end" -gt "$UNTIL" ]; then
      echo "$(date -u +%FT%TZ) $study $arch seed$seed would end ~$(date -u -d "@$end" +%FT%TZ), after STUDY_UNTIL: stopping it"
      kill -TERM "$pid"; wait "$pid"
      CHILD=
      STOPPED_FOR_TIME=1
      return
    fi
  done
  wait "$pid"
  local rc=$?
  CHILD=
  return $rc
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
  # Committed: done (in git, not merely copied by a commit_run.sh that then failed).
  git -C "$MAIN" cat-file -e "HEAD:docs/results/$study/$arch/seed$seed/efficiency.json" 2>/dev/null && continue
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
