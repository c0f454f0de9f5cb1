"""Throughput probe before the paper's row (issue 13): condensation steps/s of CIFAR-10 shapes at
IPC 10 and 50, fp32, eager and torch.compile'd, on the GPU.

    python benchmarks/device/probe.py          # on the GPU machine (device/paper_table_gpu.sh)
    DEVICE=cpu python benchmarks/device/probe.py   # a dry run of the wiring (figures mean nothing)

Each setting is scripts/device_check.py's `condense_setting` (random CIFAR-shaped images,
batch_real 256, ConvNet 128x3, Lightning fit steps; WARMUP steps, then STEPS timed steps; the
same environment variables). The figures go to stdout and to $OUT/probe.json (default
./probe.json), in device_check.json's format and rewritten after each setting, so that
`benchmarks/paper_table.py --probe` can tell which cells fit in the time left; `compile_pays`
says whether compiling beats eager over a cell's 20,000 steps, compilation time included.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import device_check  # noqa: E402  (reads DEVICE, STEPS, WARMUP, ... from the environment)

PAPER_STEPS = 20000  # condensation steps of a cell of the paper's row
# (ipc, precision, channels_last, compile): fp32 as the paper's row runs by default, eager first,
# then compiled; IPCS is 10,50 on the GPU (2,5 in a CPU dry run)
SETTINGS = [
    (ipc, "32-true", False, compile) for compile in (False, True) for ipc in device_check.IPCS
]


def compile_pays(rows: list[dict]) -> bool:
    """Whether the compiled step, its warm-up (compilation) included, condenses PAPER_STEPS
    steps sooner than the eager step at every IPC probed in both ways."""

    def seconds(row: dict) -> float:
        return row["warmup_s"] + PAPER_STEPS / row["steps_per_s"]

    timed = {(row["ipc"], row["compile"]): row for row in rows if "steps_per_s" in row}
    ipcs = {ipc for ipc, _ in timed if (ipc, True) in timed and (ipc, False) in timed}
    return bool(ipcs) and all(
        seconds(timed[ipc, True]) < seconds(timed[ipc, False]) for ipc in ipcs
    )


def main() -> None:
    import torch  # loaded by device_check already

    started = time.perf_counter()
    path = Path(os.environ.get("OUT", ".")) / "probe.json"
    report = {
        "device": "cpu" if device_check.ON_CPU else torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "steps_timed": device_check.STEPS,
        "warmup_steps": device_check.WARMUP,
        "batch_real": device_check.BATCH_REAL,
        "width": device_check.WIDTH,
        "condense": [],
    }
    for ipc, precision, channels_last, compile in SETTINGS:
        label = f"probe ipc {ipc:>2} {precision} channels_last={channels_last} compile={compile}"
        try:
            row = device_check.condense_setting(ipc, precision, channels_last, compile)
        except Exception as error:  # one broken setting (no compiler for inductor, say)
            message = f"{type(error).__name__}: {error}"[:500]
            row = {
                "ipc": ipc,
                "precision": precision,
                "channels_last": channels_last,
                "compile": compile,
                "error": message,
            }
            print(f"{label} FAILED: {message}", flush=True)
        else:
            print(
                f"{label}: {row['steps_per_s']:.2f} steps/s, warm-up {row['warmup_s']:.1f} s, "
                f"peak {row['peak_memory_gib']} GiB",
                flush=True,
            )
        report["condense"].append(row)
        report["total_seconds"] = round(time.perf_counter() - started, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    report["compile_pays"] = compile_pays(report["condense"])
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"compile pays over {PAPER_STEPS} steps: {report['compile_pays']}", flush=True)
    print(f"probe done in {report['total_seconds']} s: {path}", flush=True)


if __name__ == "__main__":
    main()
