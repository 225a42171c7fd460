#!/usr/bin/env bash
# Re-resolves the lock to the newest releases that pyproject.toml's ranges allow:
#   bash requirements/relock.sh [LOCK]      (what `make upgrade` runs before the whole suite)
# A throw-away virtualenv gets torch first (TORCH_SPEC, the CPU build), then opendelta[dev,test,bench] with
# --upgrade and the demo packages (--no-deps); its exact versions become the lock. torch itself is not in the
# lock (TORCH_SPEC is the one place that names it), nor pip, nor this package.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LOCK="${1:-$ROOT/requirements/lock.txt}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/opendelta-relock.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
"$PYTHON" -m venv "$TMP/venv"
PIP="$TMP/venv/bin/python -m pip"
$PIP install -q --upgrade pip
$PIP install -q "$TORCH_SPEC"
$PIP install -q --upgrade -e "$ROOT[dev,test,bench]"
DEMO=$("$PYTHON" -c "import tomllib; print(' '.join(tomllib.load(open('$ROOT/pyproject.toml', 'rb'))['project']['optional-dependencies']['demo']))")
# shellcheck disable=SC2086
$PIP install -q --no-deps $DEMO
{
  echo "# The tested environment: exact versions of everything opendelta[dev,test,bench] and the demo packages install"
  echo "# (torch comes first, from TORCH_SPEC in the Makefile). Used as pip constraints by \`make install\`."
  echo "# Written by \`make upgrade\` (requirements/relock.sh) on $(date -u +%Y-%m-%d) with $("$TMP/venv/bin/python" --version)."
  $PIP freeze --exclude-editable | grep -v -i -E '^(torch|pip|setuptools|wheel)==' | LC_ALL=C sort -f
} > "$LOCK.new"
mv "$LOCK.new" "$LOCK"
echo "wrote $LOCK ($(grep -c '==' "$LOCK") packages); review the diff, then commit it with the suite's result"
