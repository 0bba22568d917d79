#!/bin/bash
# Issue 29's checks on a borrowed GPU, as one prepared command (a lent machine gives minutes, not hours): the tests
# that need CUDA (skipped on CPUs), then benchmarks/gpu_check.py's figures as ratios. Everything lands in $OUT.
#
#   scripts/gpu/check.sh              # on the GPU machine (device tool: carry .whl; see below)
#   scripts/gpu/check.sh --rehearse   # here, on a CPU: the same steps, tiny, to find mistakes before the GPU's clock runs
#   scripts/gpu/check.sh --suite      # a second call, if minutes are left: the whole test suite there (pytest-xdist)
#   scripts/gpu/check.sh --recipe     # a call of its own: configs/studies/resnet20_gpu_recipe.yaml (item 6), carrying
#                                     # .gpu too (python ../shared/tools/gpu_data.py pack ../shared/data/cifar10-jpeg
#                                     # .gpu/cifar10-jpeg.npz; cp ../shared/tools/gpu_data.py .gpu/)
#
# The GPU image has torch and Lightning but not jsonargparse (the CLI's parser): carry its wheels, made here with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl jsonargparse==4.53.0 docstring_parser==0.18.0 typeshed_client==2.15.0
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-$(mktemp -d)}
PY=${PYTHON:-python3}
if [ -d .whl ] && [ "${1:-}" != "--rehearse" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU";
  $PY -c "import torch, lightning, platform; print('torch', torch.__version__, 'lightning', lightning.__version__, 'python', platform.python_version())"
} | tee "$OUT/machine.txt"

GPU_TESTS=(tests/test_captured_step.py tests/test_training_step_reads.py tests/test_distributed.py
           tests/test_checkpoint_travel.py)
if [ "${1:-}" = "--rehearse" ]; then
  timeout 600 $PY -m pytest -q -p no:cacheprovider -x tests/test_captured_step.py 2>&1 | tee "$OUT/gpu_tests.log"
  timeout 600 $PY -m benchmarks.gpu_check --device cpu --fp32 --archs resnet8 --images 256 --batch-size 64 --runs 2 \
    --json "$OUT/gpu_check.json" 2>&1 | grep -v "^INFO\|warn\|Warn\|Trainer.fit" | tee "$OUT/gpu_check.log"
  exit
fi
if [ "${1:-}" = "--recipe" ]; then
  [ -d .gpu/cifar10-jpeg ] || $PY .gpu/gpu_data.py unpack .gpu/cifar10-jpeg.npz .gpu/cifar10-jpeg || exit 1
  timeout 560 $PY -m src.sweep configs/studies/resnet20_gpu_recipe.yaml --jobs 3 --runs-per-gpu 3 2>&1 \
    | tee "$OUT/recipe.log" | tail -20
  $PY -m src.report configs/studies/resnet20_gpu_recipe.yaml 2>&1 | tail -5
  tar czf "$OUT/recipe.tgz" docs/results/resnet20_gpu_recipe lightning_logs/resnet20_gpu_recipe/sweep_logs
  exit
fi
if [ "${1:-}" = "--suite" ]; then
  timeout 540 $PY -m pytest -q -p no:cacheprovider -n 14 -rs 2>&1 | tee "$OUT/suite.log" | tail -40
  exit
fi
echo "== GPU tests $(date -u +%T)"
timeout 240 $PY -m pytest -q -p no:cacheprovider -rs "${GPU_TESTS[@]}" -k "gpu or cuda or captured or travel" \
  2>&1 | tee "$OUT/gpu_tests.log" | tail -25
echo "== gpu_check $(date -u +%T)"
timeout 330 $PY -m benchmarks.gpu_check --json "$OUT/gpu_check.json" 2>&1 \
  | grep -v "^INFO\|warn\|Warn\|Trainer.fit" | tee "$OUT/gpu_check.log"
echo "== done $(date -u +%T)"
