#!/usr/bin/env bash
# Refresh constraints.txt deliberately: a fresh venv takes today's newest releases that pyproject.toml allows,
# runs the whole test suite, and only when it is green rewrites constraints.txt with what was installed.
#
#   bash scripts/refresh_constraints.sh            # then review `git diff constraints.txt` and commit it
#
# A red suite leaves constraints.txt as it is and names the venv to investigate; bound the release that broke us
# in pyproject.toml (as `opencv-contrib-python-headless<5.1`) and run this again.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv-refresh}
rm -rf "$venv"
python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0            # the CPU wheel (a plain `torch` would pull a CUDA build)
python -m pip install -q -e ".[test]"
if ! python -m pytest -q -p no:cacheprovider; then
  echo "the suite fails with today's releases: constraints.txt is unchanged; the venv is $venv" >&2
  exit 1
fi
{
  echo "# The versions the whole test suite last passed with (scripts/refresh_constraints.sh wrote this file;"
  echo "# CI and the README's test command install with it: pip install -c constraints.txt ...)."
  echo "torch==$(python -c 'import torch; print(torch.__version__.split("+")[0])')"
  echo "setuptools==$(python -c 'import setuptools; print(setuptools.__version__)')"
  python -m pip freeze --exclude-editable | grep -viE '^(torch|setuptools|pip|espcn-hf)=='
} > constraints.txt.tmp
mv constraints.txt.tmp constraints.txt
echo "constraints.txt refreshed from a green suite; review and commit it"
