#!/usr/bin/env bash
# The prepared GPU run: the CUDA tests at full shapes, then every GPU benchmark, each writing its
# table (device, versions, dtype, shapes, measured floors) to bench/results/<name>-cuda.md.
#
#   bash bench/gpu.sh            on a machine with an NVIDIA GPU, from the source tree; needs torch and
#                                triton only (no network, no install: the package is staged below)
#   bash bench/gpu.sh --dry-run  the same steps on the CPU at tiny shapes, nothing saved (CI runs this
#                                so that the script never rots)
set -euo pipefail
cd "$(dirname "$0")/.."
dry_run=0
[ "${1:-}" = "--dry-run" ] && dry_run=1

# Import clvp from this tree without installing it: a staging folder whose clvp/ links the library's
# files and maps kernels/ and bench/ to clvp.kernels and clvp.bench, as pyproject.toml's package-dir does.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/clvp"
for f in clvp/*; do ln -s "$PWD/$f" "$stage/clvp/"; done
ln -s "$PWD/kernels" "$stage/clvp/kernels"
ln -s "$PWD/bench" "$stage/clvp/bench"
export PYTHONPATH="$stage${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONSAFEPATH=1  # (Python >= 3.11) the current folder's clvp/, which lacks kernels/, must not shadow the stage
export PYTHONUNBUFFERED=1

python - <<'EOF'
import platform, torch
import clvp.kernels
try:
    import triton; tv = triton.__version__
except ImportError:
    tv = "not installed"
dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"gpu.sh: {dev}; torch {torch.__version__}, triton {tv}, python {platform.python_version()}; "
      f"clvp.kernels from {clvp.kernels.__file__}")
EOF

run() { echo "== $*" >&2; "$@"; }

if [ "$dry_run" = 1 ]; then  # (bench_log_mel runs whole in tests/test_readme.py: `clvp bench --only log_mel`)
  run python -m clvp.bench.bench_rotary_attention --batches 1 --lengths 33 --repeat 1 --no-hf
  run python -m clvp.bench.bench_decode_attention
  run python -m clvp.bench.bench_decode_step --tiny
  run python -m clvp.bench.bench_train_step --tiny
  run python -m clvp.bench.bench_corpus --copies 1 --max-new-tokens 4
  exit 0
fi

python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu.sh: no CUDA device (use --dry-run on a CPU)')"
unset TRITON_INTERPRET
save=(--save)
# The CUDA tests at full shapes (the tests marked requires_cuda run here, not in CI) and the
# model-level kernel equivalence tests, with the cuda hypothesis profile.
run env HYPOTHESIS_PROFILE=cuda python -m pytest -q -x tests/test_rotary_attention.py tests/test_decode_attention.py \
  tests/test_log_mel.py tests/test_feature_extractor.py tests/test_model_kernels.py tests/test_decode_step.py
# Every GPU benchmark (each times its baseline in the same run and records its conditions).
run python -m clvp.bench.bench_rotary_attention "${save[@]}"
run python -m clvp.bench.bench_decode_attention "${save[@]}"
run python -m clvp.bench.bench_log_mel "${save[@]}"
run python -m clvp.bench.bench_decode_step "${save[@]}"
run python -m clvp.bench.bench_train_step "${save[@]}"
run python -m clvp.bench.bench_corpus --device cuda "${save[@]}"
echo "gpu.sh: done; tables in bench/results/*-cuda.md (and *-<gpu>.md)" >&2
