#!/usr/bin/env bash
# The device check in one command, from the repository root (at most ~5 minutes on one H200):
#   bash scripts/device_check.sh                     # on the GPU machine; figures -> $OUT
#   DEVICE=cpu STEPS=2 bash scripts/device_check.sh  # a tiny dry run on a CPU
# Nothing is downloaded (the device has no network). Missing Python packages are listed; when a
# folder of wheels is at $WHEELS (default: wheels/ or shared/wheels/), they are installed from it
# offline (pip --no-index). See scripts/device_check.py for what is measured.
set -uo pipefail
cd "$(dirname "$0")/.."
# $PYTHON, else the project's .venv when it runs here, else python3
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  if [ -x .venv/bin/python ] && .venv/bin/python -c "" 2>/dev/null; then PYTHON=.venv/bin/python; fi
fi

# import name -> distribution name, for everything scripts/device_check.py imports
missing=$("$PYTHON" - <<'PY'
import importlib.util
needed = {
    "torch": "torch", "numpy": "numpy", "PIL": "pillow", "lightning": "lightning",
    "lightning_utilities": "lightning-utilities", "torchmetrics": "torchmetrics",
    "yaml": "pyyaml", "tqdm": "tqdm", "fsspec": "fsspec", "packaging": "packaging",
    "typing_extensions": "typing-extensions",
}
print(" ".join(dist for module, dist in needed.items() if importlib.util.find_spec(module) is None))
PY
)
if [ -n "$missing" ]; then
  echo "device_check: missing Python packages: $missing"
  wheels=${WHEELS:-}
  if [ -z "$wheels" ]; then
    for candidate in wheels shared/wheels; do [ -d "$candidate" ] && wheels=$candidate && break; done
  fi
  if [ -n "$wheels" ] && [ -d "$wheels" ]; then
    echo "device_check: installing them offline from $wheels"
    # shellcheck disable=SC2086  # one word per package
    if ! "$PYTHON" -m pip install -q --no-index --find-links "$wheels" $missing; then
      echo "device_check: offline install failed; carry wheels for: $missing (and their dependencies)"
      exit 2
    fi
  else
    echo "device_check: no wheel folder found (set WHEELS=DIR); carry wheels for: $missing"
    exit 2
  fi
fi

if [ "${DEVICE:-cuda}" != "cpu" ]; then
  if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "device_check: torch sees no CUDA device (torch $("$PYTHON" -c 'import torch; print(torch.__version__)')); use DEVICE=cpu for a dry run"
    exit 3
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
fi

export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout "${TIME_LIMIT:-330}" "$PYTHON" scripts/device_check.py
