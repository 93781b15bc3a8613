#!/usr/bin/env bash
# Fetch, on a machine with a package index, the wheels bench/gpu.sh needs on a GPU machine that has
# torch, triton, numpy, tokenizers, safetensors, tqdm, pytest and hypothesis but no network: the audio
# readers the front-end tests import (soundfile with cffi, soxr), and the transformers 4.46.3 baseline
# (with the tokenizers and huggingface_hub versions it accepts). They land in .whl/ (ignored by git);
# carry that folder to the GPU machine, where bench/gpu.sh installs them into a temporary folder.
#
#   bash bench/gpu_wheels.sh [python-version]     (default 3.12, the GPU image's Python)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-3.12}
mkdir -p .whl
python -m pip download --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  soundfile cffi pycparser soxr transformers==4.46.3 tokenizers==0.20.3 huggingface_hub==0.26.5
du -sh .whl
