#!/usr/bin/env bash
# Issue 13 on one GPU machine, one command from the repository root:
#   1. the throughput probe (benchmarks/device/probe.py: condensation steps/s at IPC 10 and 50,
#      fp32, eager and compiled; about 1-2 minutes, at most PROBE_S seconds)
#   2. the paper's row (benchmarks/paper_table.py), cells in the order of CELLS; a cell whose
#      condensation alone cannot finish in the time left (by the probe's steps/s) is not started,
#      and a job still running at BUDGET_S seconds is stopped. Compiled when the probe says
#      compiling pays over 20,000 steps (COMPILE=auto), or as COMPILE=0 / COMPILE=1 says.
# Everything lands in $OUT as it goes (at most 8 files): paper_table_gpu.log, probe.json,
# paper_table.json, paper_table.md, and <cell>_synthetic.pt of each finished cell.
#
# Before (here, on the CPU machine): bash benchmarks/device/prepare.sh
# Then, with the device tool:
#   run(command="bash benchmarks/device/paper_table_gpu.sh", timeout_s=600,
#       carry=[".whl", "data/cifar10-jpeg.tar.gz"])
# A later call continues: copy the returned paper_table.json to benchmarks/results/ first (its
# finished cells are skipped); on a machine still warm, a stopped cell resumes from its last
# checkpoint in lightning_logs/paper_table/.
#
# Environment: BUDGET_S (default 540: seconds for this whole command, under the tool's 600),
# PROBE_S (default 150; PROBE=0 skips the probe), CELLS (default ipc=10,ipc=1,ipc=50,whole),
# COMPILE (auto | 0 | 1), PAPER_ARGS (more paper_table.py options, e.g. "--whole-models 2"),
# FRESH=1 (ignore benchmarks/results/paper_table.json), DEVICE=cpu (a dry run of the wiring on
# a CPU: the probe at toy size and paper_table.py --tiny; its figures mean nothing).
set -uo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
OUT=${OUT:-/tmp/paper_table_gpu}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/paper_table_gpu.log") 2>&1
export PYTHONUNBUFFERED=1
elapsed() { echo $(($(date +%s) - started)); }

# Python, the carried wheels and the device: the same set-up as scripts/gpu_acceptance.sh
# shellcheck source=scripts/gpu_env.sh
. scripts/gpu_env.sh
gpu_env paper_table_gpu || exit $?

DRY=0
[ "${DEVICE:-cuda}" = cpu ] && DRY=1

if [ "${PROBE:-1}" = 1 ]; then
  echo "== probe ($(elapsed) s)"
  OUT=$OUT timeout "${PROBE_S:-150}" "$PYTHON" benchmarks/device/probe.py \
    || echo "paper_table_gpu: the probe failed or was stopped (exit $?); the cells run without estimates"
fi

args=(--only "${CELLS:-ipc=10,ipc=1,ipc=50,whole}" --out "$OUT")
[ -f "$OUT/probe.json" ] && args+=(--probe "$OUT/probe.json")
compile=${COMPILE:-auto}
[ "$DRY" = 1 ] && [ "$compile" = auto ] && compile=0  # the dry run's probe compiles nothing
if [ "$compile" = auto ]; then
  compile=0
  if [ -f "$OUT/probe.json" ] && "$PYTHON" -c "import json, sys; sys.exit(0 if json.load(open('$OUT/probe.json')).get('compile_pays') else 1)"; then
    compile=1
  fi
fi
[ "$compile" = 1 ] && args+=(--compile)
runs=lightning_logs/paper_table
if [ "$DRY" = 1 ]; then  # the toy data and run folders stay out of $OUT
  scratch=${TMPDIR:-/tmp}/paper_table_gpu_dry
  runs=$scratch/runs
  # the toy archive comes from the tests' data writers (kept if already there)
  PYTHONPATH="tests:$PYTHONPATH" "$PYTHON" -c "import sys; from helpers.fixtures import write_cifar10_jpeg_archive as write; write(sys.argv[1])" "$scratch/tiny_cifar10.tar.gz" || exit 2
  args+=(--tiny --data "$scratch/tiny_cifar10.tar.gz" --unpack-to "$scratch/data" --runs "$runs")
elif [ "${FRESH:-0}" != 1 ] && [ -f benchmarks/results/paper_table.json ] && [ ! -f "$OUT/paper_table.json" ]; then
  cp benchmarks/results/paper_table.json "$OUT/paper_table.json"  # its finished cells are skipped
fi
left=$((${BUDGET_S:-540} - $(elapsed)))
echo "== paper_table ($(elapsed) s; ${left} s left): ${args[*]} ${PAPER_ARGS:-}"
# shellcheck disable=SC2086  # PAPER_ARGS: one word per option
"$PYTHON" benchmarks/paper_table.py "${args[@]}" --budget-s "$left" ${PAPER_ARGS:-}
status=$?

for slug in ipc1 ipc10 ipc50; do
  if [ -f "$runs/$slug/results.json" ] && [ -f "$runs/$slug/synthetic.pt" ]; then
    cp "$runs/$slug/synthetic.pt" "$OUT/${slug}_synthetic.pt"
  fi
done
echo "== done in $(elapsed) s (paper_table exit $status)"
exit $status
