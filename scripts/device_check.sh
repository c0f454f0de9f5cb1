#!/usr/bin/env bash
# The device check in one command, from the repository root (at most ~5 minutes on one H200):
#   bash scripts/device_check.sh                     # on the GPU machine; figures -> $OUT
#   DEVICE=cpu STEPS=2 bash scripts/device_check.sh  # a tiny dry run on a CPU
# Nothing is downloaded (the device has no network): what Python lacks comes from the wheels of
# benchmarks/device/prepare.sh (scripts/gpu_env.sh). See scripts/device_check.py for what is
# measured.
set -uo pipefail
cd "$(dirname "$0")/.."
# Python, the carried wheels (.whl/ from benchmarks/device/prepare.sh) and the device: the same
# set-up as scripts/gpu_acceptance.sh
# shellcheck source=scripts/gpu_env.sh
. scripts/gpu_env.sh
gpu_env device_check || exit $?
exec timeout "${TIME_LIMIT:-330}" "$PYTHON" scripts/device_check.py
