#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine, then runs it.
# Usage: bash scripts/test.sh [pytest args…]
set -euo pipefail
cd "$(dirname "$0")/.."

py=${PYTHON:-python3}
# torch is pinned (CPU build) in the [test] extra: a looser requirement pulls GBs of CUDA wheels.
# [frameworks]: Lightning, for the real-trainer comparison (tests/frameworks; ~10 s to install,
# ~15 s to run). The torchvision-based trainers run with scripts/test-frameworks.sh instead.
"$py" -m pip install --quiet --disable-pip-version-check -e ".[test,frameworks]"

# git-lfs for the LFS tests; a Docker engine (and a stand-in base image) for the container test.
if ! command -v git-lfs >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq git-lfs >/dev/null) || echo "warning: could not install git-lfs" >&2
fi
if [ -f scripts/docker-ci.sh ]; then
  bash scripts/docker-ci.sh || echo "warning: Docker engine unavailable; the container test will say so and skip" >&2
fi

exec "$py" -m pytest "$@"
