#!/usr/bin/env bash
# The prepared GPU run: every GPU benchmark, each writing its table (card, versions, dtype, shapes, the
# measured copy bandwidth and matmul peak) to bench/results/<name>-cuda.md, then the CUDA tests at full
# shapes. A step that fails or overruns its time limit is reported and the run goes on to the next, so
# one failure costs only its own table; the exit status is 1 if any step failed.
#
#   bash bench/gpu.sh            on a machine with an NVIDIA GPU, from the source tree; needs torch and
#                                triton (plus numpy, tokenizers, safetensors, tqdm, pytest, hypothesis),
#                                no network and no install: the package is staged below. Whatever else is
#                                missing comes from carried wheels: run `bash bench/gpu_wheels.sh` on a
#                                machine with a package index first and carry the .whl/ folder (the audio
#                                readers, and transformers 4.46.3 as the baseline when .oracle/ is absent).
#   bash bench/gpu.sh --dry-run  the same steps on the CPU at tiny shapes, nothing saved (CI runs this
#                                so that the script never rots)
#
# Budget: about 8 minutes on an H100 in all (the per-step limits below add up to 7.5 minutes).
set -uo pipefail
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

# Carried wheels, only for what this machine lacks (never replacing an installed package).
install_wheels() {  # install_wheels TARGET PATTERN...
  local target=$1; shift
  local wheels=()
  for pattern in "$@"; do for w in .whl/$pattern; do [ -f "$w" ] && wheels+=("$w"); done; done
  [ ${#wheels[@]} -gt 0 ] && python -m pip install -q --no-index --no-deps --no-compile --target "$target" "${wheels[@]}"
}
if ! python -c "import soundfile, soxr" 2>/dev/null; then
  install_wheels "$stage/site" "soundfile-*.whl" "cffi-*.whl" "pycparser-*.whl" "soxr-*.whl" \
    && export PYTHONPATH="$PYTHONPATH:$stage/site"
fi
if [ ! -d .oracle/transformers ] && [ -z "${CLVP_ORACLE:-}" ]; then
  install_wheels "$stage/oracle" "transformers-4.46.3-*.whl" "tokenizers-*.whl" "huggingface_hub-*.whl" \
    && export CLVP_ORACLE="$stage/oracle"
fi

python - <<'PY'
import os, platform, torch
import clvp.kernels
from clvp.bench._common import ORACLE
try:
    import triton; tv = triton.__version__
except ImportError:
    tv = "not installed"
dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"gpu.sh: {dev}; torch {torch.__version__}, triton {tv}, python {platform.python_version()}; "
      f"clvp.kernels from {clvp.kernels.__file__}; baseline transformers "
      f"{'from ' + str(ORACLE) if (ORACLE / 'transformers').is_dir() else 'not available (ours only)'}")
PY

failed=()
start=$SECONDS
run() {  # run LIMIT_SECONDS COMMAND...: go on after a failure, remember it
  local limit=$1; shift
  echo "== [$((SECONDS - start)) s] $*" >&2
  timeout "$limit" "$@"
  local rc=$?
  if [ $rc -ne 0 ]; then
    echo "gpu.sh: FAILED (exit $rc$([ $rc -eq 124 ] && echo ", over its ${limit} s")): $*" >&2
    failed+=("$*")
  fi
}
finish() {
  echo "gpu.sh: $((SECONDS - start)) s; ${#failed[@]} failed step(s)" >&2
  for f in "${failed[@]}"; do echo "  failed: $f" >&2; done
  [ ${#failed[@]} -eq 0 ]
  exit $?
}

if [ "$dry_run" = 1 ]; then  # (bench_log_mel runs whole in tests/test_readme.py: `clvp bench --only log_mel`)
  run 600 python -m clvp.bench.bench_rotary_attention --batches 1 --lengths 33 --repeat 1 --no-hf
  run 600 python -m clvp.bench.bench_decode_attention
  run 600 python -m clvp.bench.bench_decode_step --tiny
  run 600 python -m clvp.bench.bench_train_step --tiny
  run 600 python -m clvp.bench.bench_corpus --copies 1 --max-new-tokens 4
  finish
fi

python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu.sh: no CUDA device (use --dry-run on a CPU)')" || exit 1
unset TRITON_INTERPRET
# Every GPU benchmark (each times its baseline in the same run and records its conditions).
run 75 python -m clvp.bench.bench_rotary_attention --save
run 45 python -m clvp.bench.bench_decode_attention --save
run 45 python -m clvp.bench.bench_log_mel --save
run 120 python -m clvp.bench.bench_decode_step --save
run 45 python -m clvp.bench.bench_train_step --save
run 45 python -m clvp.bench.bench_corpus --device cuda --save
# The CUDA tests at full shapes (the tests marked requires_cuda run here, not in CI) and the
# model-level kernel equivalence tests, with the cuda hypothesis profile.
run 75 env HYPOTHESIS_PROFILE=cuda python -m pytest -q tests/test_rotary_attention.py tests/test_decode_attention.py \
  tests/test_log_mel.py tests/test_feature_extractor.py tests/test_model_kernels.py tests/test_decode_step.py \
  tests/test_compile_graph.py
echo "gpu.sh: tables in bench/results/*-cuda.md (and *-<gpu>.md)" >&2
finish
