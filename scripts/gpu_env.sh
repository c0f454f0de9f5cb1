# The one way the device scripts get their Python ready on a GPU machine; sourced (not run) by
# scripts/gpu_acceptance.sh, scripts/device_check.sh and benchmarks/device/paper_table_gpu.sh,
# from the repository root. The GPU machine has no network: what its Python lacks comes from the
# wheels that benchmarks/device/prepare.sh puts into .whl/ on the CPU machine (Hydra, OmegaConf,
# antlr4), carried with the data archive (data/cifar10-jpeg.tar.gz):
#   run(command="bash scripts/gpu_acceptance.sh", carry=[".whl", "data/cifar10-jpeg.tar.gz"])
# Sets PYTHON and PYTHONPATH (src first); checks the device unless DEVICE=cpu. Returns 2 when
# a package is missing and no wheel brings it, 3 when DEVICE=cuda and torch sees no GPU.

gpu_env() {
  local who=${1:-gpu_env}
  # $PYTHON, else the project's .venv when it runs here, else python3 (the GPU image's)
  if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    if [ -x .venv/bin/python ] && .venv/bin/python -c "" 2>/dev/null; then PYTHON=.venv/bin/python; fi
  fi
  export PYTHON
  if ! "$PYTHON" -c "import hydra, omegaconf" 2>/dev/null; then
    local wheels=${WHEELS:-.whl}
    if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
      echo "$who: no Hydra here and no wheels in $wheels/: run benchmarks/device/prepare.sh and carry .whl"
      return 2
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "$wheels"/*.whl || return 2
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
  "$PYTHON" -c "import hydra, omegaconf, torch, lightning, dmcondense" || return 2
  if [ "${DEVICE:-cuda}" != cpu ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
    if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
      echo "$who: torch sees no CUDA device; DEVICE=cpu for a dry run"
      return 3
    fi
  fi
  "$PYTHON" -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
}
