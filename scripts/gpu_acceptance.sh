#!/usr/bin/env bash
# The GPU acceptance run in one command, from the repository root (at most ~5 minutes on one
# H100): every method's train job in fp32 and bf16-mixed, DM compiled, one run repeated bit for
# bit, the evaluate, pretrain and nas jobs, host syncs a step and each run's evaluation device
# (scripts/gpu_acceptance.py says what and how). Its JSON goes to $OUT/gpu_acceptance.json
# (default ./), rewritten after every result; each run's output to $RUNS/<run>.log.
#
#   bash benchmarks/device/prepare.sh        # here, on the CPU machine: .whl/ and the data
#   run(command="bash scripts/gpu_acceptance.sh", timeout_s=420,
#       carry=[".whl", "data/cifar10-jpeg.tar.gz"])
#   DEVICE=cpu bash scripts/gpu_acceptance.sh   # the same wiring at toy size (the suite runs it)
#
# The throughput check (scripts/device_check.sh) and the paper's row
# (benchmarks/device/paper_table_gpu.sh) are later, separate commands with the same set-up.
# Environment: DEVICE, BUDGET_S (default 280), TIME_LIMIT (hard stop, default 330), METHODS,
# ITERATIONS, IPC, BATCH_REAL, EVAL_EPOCHS, DATA, TRAIN_PER_CLASS, RUNS, PYTHON, WHEELS.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/gpu_env.sh
. scripts/gpu_env.sh
gpu_env gpu_acceptance || exit $?
export PYTHONUNBUFFERED=1
exec timeout "${TIME_LIMIT:-330}" "$PYTHON" scripts/gpu_acceptance.py
