#!/usr/bin/env bash
# Run HERE (the CPU machine, from any folder) before benchmarks/device/paper_table_gpu.sh goes to a GPU
# machine. The GPU machine cannot download anything; its python3 has torch, lightning, torchvision,
# pillow, scipy, matplotlib and tensorboard but not Hydra. This puts what it lacks into two
# git-ignored paths of the working tree, which the device tool's `carry` takes along:
#   .whl/                      wheels of hydra-core, omegaconf, antlr4-python3-runtime (the
#                              versions installed in .venv; antlr4 is built here: PyPI has only
#                              its source archive)
#   data/cifar10-jpeg.tar.gz   the shared CIFAR-10 JPEG copy (../shared does not travel)
# Idempotent. Then: run(command="bash benchmarks/device/paper_table_gpu.sh", timeout_s=600,
#                       carry=[".whl", "data/cifar10-jpeg.tar.gz"])
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
ARCHIVE=${ARCHIVE:-../shared/datasets/cifar10-jpeg.tar.gz}
SHA256=8d8437376819a5c304d3ecf515adfc156354815e7f0e7ff4df922fd55cf502ce  # ../shared/datasets/README.md

version() { "$PYTHON" -c "import importlib.metadata as m; print(m.version('$1'))"; }
hydra=$(version hydra-core)
omegaconf=$(version omegaconf)
antlr=$(version antlr4-python3-runtime)

mkdir -p .whl data
# one version of each, so that `pip install .whl/*.whl` there never sees two
rm -f .whl/hydra_core-*.whl .whl/omegaconf-*.whl .whl/antlr4_python3_runtime-*.whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d .whl \
  "hydra-core==$hydra" "omegaconf==$omegaconf"
"$PYTHON" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$antlr"

if [ ! -f data/cifar10-jpeg.tar.gz ] || ! echo "$SHA256  data/cifar10-jpeg.tar.gz" | sha256sum -c --quiet -; then
  cp "$ARCHIVE" data/cifar10-jpeg.tar.gz
fi
echo "$SHA256  data/cifar10-jpeg.tar.gz" | sha256sum -c --quiet -
ls -l .whl data/cifar10-jpeg.tar.gz
echo "prepared: carry [\".whl\", \"data/cifar10-jpeg.tar.gz\"] with bash benchmarks/device/paper_table_gpu.sh"
