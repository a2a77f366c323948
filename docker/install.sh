#!/usr/bin/env bash
# The serving environment, installed exactly as the image installs it:
#
#   docker/install.sh VENV_DIR gpu|cpu [PROJECT_DIR]
#
# 1. Create VENV_DIR (with $PYTHON, default python3) unless it exists, and install
#    docker/requirements-<flavor>.txt with --require-hashes --no-deps: every wheel is pinned and
#    hash-checked, and nothing the lock does not list can slip in.
# 2. With PROJECT_DIR: build and install the project from it with the locked setuptools and no
#    index, drop setuptools (build-only), and let `pip check` prove the set is complete.
#
# The Dockerfile runs step 1 alone first, so the large dependency layer stays cached while the code
# changes; tests/deploy runs both steps with the cpu lock into a fresh virtual environment.
set -euo pipefail

usage="usage: $0 VENV_DIR gpu|cpu [PROJECT_DIR]"
venv=${1:?$usage}
flavor=${2:?$usage}
project=${3:-}
lock="$(cd "$(dirname "$0")" && pwd)/requirements-$flavor.txt"
[[ -f $lock ]] || { echo "$0: no lock for flavor '$flavor' ($lock)" >&2; exit 2; }

[[ -x $venv/bin/python ]] || "${PYTHON:-python3}" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --require-hashes --no-deps --only-binary=:all: -r "$lock"

if [[ -n $project ]]; then
    "${pip[@]}" install --quiet --no-deps --no-build-isolation --no-index "$project"
    "${pip[@]}" uninstall --quiet --yes setuptools
    "${pip[@]}" check
fi
