"""The GPU acceptance run (issue 35): the real jobs end to end on one device, in a few minutes.

Run through scripts/gpu_acceptance.sh (it brings the wheels and the data over first). In order:
  1. the train job of every method in METHODS, fp32 (32-true) and bf16-mixed, at a small budget
     on CIFAR-shaped data (a subset of the shared CIFAR-10 JPEG copy when present, else a
     CIFAR-shaped archive the tests' writer makes); each run's host syncs a step, counted under
     torch.cuda.set_sync_debug_mode over one step past the first ones, and the device its
     final scoring ran on (results.json: evaluation.device)
  2. DM with compile=true
  3. one configuration (DM, fp32) again, its synthetic set compared bit for bit with the first
  4. the evaluate, pretrain and nas jobs once each
The JSON ($OUT/gpu_acceptance.json, or ./gpu_acceptance.json) is rewritten after every result,
so a run cut short keeps what it measured. A run that fails is recorded (its last lines) and the
next one starts; a setting a method refuses in one line (docs/howto/gpu.md's support table) is
recorded as refused, not failed. DEVICE=cpu runs the same wiring at toy size (the suite runs
it); its figures mean nothing.

Environment: DEVICE (cuda | cpu), BUDGET_S (seconds for everything; a stage that cannot start
in time is recorded as skipped), ITERATIONS, IPC, BATCH_REAL, EVAL_EPOCHS, METHODS (a comma list
of METHODS' keys), DATA (a CIFAR-10 JPEG .tar.gz or its unpacked folder), TRAIN_PER_CLASS
(training images a class taken from the archive), RUNS (where the run folders go).

A method added later joins by one entry in METHODS: its overrides at this small budget (the
toy budget under DEVICE=cpu, in TOY).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import sys
import tarfile
import tempfile
import time
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEVICE = os.environ.get("DEVICE", "cuda")
ON_CPU = DEVICE == "cpu"
POOL = "{pools}"

# Each method's overrides on top of the common ones (a small budget on a GPU).
METHODS: dict[str, list[str]] = {
    "dm": [],
    "dc": ["method=dc"],
    "dsa": ["method=dsa"],
    "m3d": ["method=m3d"],
    "idm": ["method=idm"],
    "ncfm": ["method=ncfm", "pool.size=2", "pool.epochs=2", f"pool.root={POOL}",
             "pool.build=auto"],
    "dance": ["method=dance", "pool.size=2", "pool.epochs=2", f"pool.root={POOL}",
              "pool.build=auto"],
    "rded": ["method=rded", "pool.size=1", "pool.epochs=2", f"pool.root={POOL}",
             "pool.build=auto"],
    "mtt": ["method=mtt", "experts.size=2", "experts.epochs=3", f"experts.root={POOL}/experts",
            "experts.build=auto", "method.syn_steps=10", "method.expert_epochs=1",
            "method.max_start_epoch=2"],
    "datm": ["method=datm", "experts.size=2", "experts.epochs=3", f"experts.root={POOL}/experts",
             "experts.build=auto", "method.syn_steps=10", "method.expert_epochs=1",
             "method.max_start_epoch=2", "method.initial_max_start_epoch=1",
             "method.expansion_end=2"],
}  # fmt: skip
# Under DEVICE=cpu: what each method needs on top to stay a toy.
TOY: dict[str, list[str]] = {
    "dc": ["method.outer_loop=2", "method.inner_loop=1"],
    "dsa": ["method.outer_loop=2", "method.inner_loop=1"],
    "idm": ["method.initial_networks=2", "method.model_train_steps=1", "method.batch_train=8"],
    "ncfm": ["method.num_freqs=16", "pool.size=1", "pool.epochs=1"],
    "dance": ["pool.size=1", "pool.epochs=1"],
    "rded": ["pool.epochs=1"],
    "mtt": ["method.syn_steps=3"],
    "datm": ["method.syn_steps=3"],
}
PRECISIONS = ("32-true", "bf16-mixed")
SYNC_STEP = 2  # the step whose host syncs are counted (past the first steps' one-off work)

ITERATIONS = int(os.environ.get("ITERATIONS", 4 if ON_CPU else 20))
IPC = int(os.environ.get("IPC", 1 if ON_CPU else 10))
BATCH_REAL = int(os.environ.get("BATCH_REAL", 4 if ON_CPU else 128))
EVAL_EPOCHS = int(os.environ.get("EVAL_EPOCHS", 1 if ON_CPU else 50))
TRAIN_PER_CLASS = int(os.environ.get("TRAIN_PER_CLASS", 500))
BUDGET_S = float(os.environ.get("BUDGET_S", 280))
STARTED = time.time()
OUT = Path(os.environ.get("OUT") or ".") / "gpu_acceptance.json"
RUNS = Path(os.environ.get("RUNS") or Path(tempfile.gettempdir()) / "gpu_acceptance_runs")
ARCHIVES = [REPO / "data" / "cifar10-jpeg.tar.gz", REPO.parent / "shared" / "datasets" /
            "cifar10-jpeg.tar.gz"]  # fmt: skip

sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))  # the toy archive's writer (helpers.fixtures)

REPORT: dict = {"device": DEVICE, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": []}


def save() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(REPORT, indent=1))
    tmp.replace(OUT)


def seconds_left() -> float:
    return BUDGET_S - (time.time() - STARTED)


# --- the data -----------------------------------------------------------------------------------
def unpack_subset(archive: Path, into: Path, train_per_class: int) -> Path:
    """The archive's first `train_per_class` training images a class and its whole test split,
    unpacked once into `into`."""
    if (into / "train").is_dir():
        return into
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if member.isfile() and parts[-3:-2] == ("train",):
                if int(Path(parts[-1]).stem) >= train_per_class:
                    continue
            members.append(member)
        tar.extractall(into, members=members, filter="data")
    return into


def data() -> tuple[Path, dict]:
    given = os.environ.get("DATA")
    if given and Path(given).is_dir():
        return Path(given), {"folder": given, "description": "the given folder"}
    archive = Path(given) if given else next((a for a in ARCHIVES if a.is_file()), None)
    if ON_CPU or archive is None:
        from helpers.fixtures import write_cifar10_jpeg_archive

        archive = write_cifar10_jpeg_archive(RUNS / "toy_cifar10.tar.gz", 12, 4)
        description = "a CIFAR-shaped toy archive (tests/helpers/fixtures.py)"
    else:
        description = f"CIFAR-10, the shared JPEG copy: {TRAIN_PER_CLASS} training images a class"
    folder = unpack_subset(archive, RUNS / f"data_{archive.stem}_{TRAIN_PER_CLASS}",
                           TRAIN_PER_CLASS)  # fmt: skip
    return folder, {"archive": str(archive), "folder": str(folder), "description": description}


# --- running a job in this process --------------------------------------------------------------
class SyncCounter:
    """A Lightning callback: the host syncs of step SYNC_STEP (torch.cuda.set_sync_debug_mode
    warns at each; nothing to count on a CPU)."""

    def __new__(cls):
        import lightning as L
        import torch

        class Counter(L.Callback):
            def __init__(self) -> None:
                self.count: int | None = None
                self.where: list[str] = []
                self._record = None

            def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
                if batch_idx == SYNC_STEP:
                    self._record = warnings.catch_warnings(record=True)
                    self.caught = self._record.__enter__()
                    warnings.simplefilter("always")
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                        torch.cuda.set_sync_debug_mode("warn")
                elif batch_idx == SYNC_STEP + 1:
                    self.stop()

            def on_train_end(self, trainer, module) -> None:
                self.stop()

            def stop(self) -> None:
                if self._record is None:
                    return
                if torch.cuda.is_available():
                    torch.cuda.set_sync_debug_mode(0)
                self._record.__exit__(None, None, None)
                syncs = [w for w in self.caught if "synchroniz" in str(w.message)]
                self.count = len(syncs)
                self.where = sorted({f"{Path(w.filename).name}:{w.lineno}" for w in syncs})
                self._record = None

        return Counter()


def run_job(module: str, overrides: list[str], name: str, callbacks: list = ()) -> dict:
    """`python -m <module> <overrides>` in this process (the same entry point a user runs),
    its output to <RUNS>/<name>.log; returns its status, seconds and last lines."""
    import importlib

    from dmcondense.jobs import build

    entry = importlib.import_module(module)
    run_dir = RUNS / name
    argv = [*overrides, f"hydra.run.dir={run_dir}"]
    make = build.trainer
    build.trainer = lambda cfg, d, cbs, plugins=None: make(cfg, d, [*cbs, *callbacks], plugins)
    saved, out, code = sys.argv, io.StringIO(), 0
    sys.argv = [module, *argv]
    started = time.time()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                entry.main()
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.argv, build.trainer = saved, make
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / f"{name}.log").write_text(out.getvalue())
    record = {"name": name, "job": module, "overrides": overrides, "returncode": code,
              "seconds": round(time.time() - started, 1)}  # fmt: skip
    if code == 2:  # a one-line refusal of the setting (the support table): not a failure
        record["refused"] = out.getvalue().strip().splitlines()[-1:]
    elif code:
        record["last_lines"] = out.getvalue().strip().splitlines()[-6:]
    results = run_dir / "results.json"
    if code == 0 and results.is_file():
        summary = json.loads(results.read_text())
        record["evaluation_device"] = summary.get("evaluation", {}).get("device")
        record["accuracy"] = {
            f"{s}/{m}": r["mean"] for s, by in summary.get("results", {}).items()
            for m, r in by.items()
        }  # fmt: skip
    return record


def add(record: dict) -> dict:
    REPORT["runs"].append(record)
    REPORT["seconds"] = round(time.time() - STARTED, 1)
    save()
    code = record.get("returncode")
    status = {0: "ok", 2: "refused"}.get(code, record.get("skipped", "FAILED"))
    print(f"{record['name']:<28} {status:<8} {record.get('seconds', 0):>6} s  "
          f"syncs/step {record.get('syncs_per_step')}  device {record.get('evaluation_device')}",
          flush=True)  # fmt: skip
    return record


def skip_if_late(name: str, needs_s: float) -> bool:
    if seconds_left() >= needs_s:
        return False
    add({"name": name, "skipped": "time", "seconds_left": round(seconds_left(), 1)})
    return True


def synthetic_digest(run: str) -> str | None:
    import torch

    path = RUNS / run / "synthetic.pt"
    if not path.is_file():
        return None
    images = torch.load(path, weights_only=False)["images"]
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()


def main() -> int:
    import torch

    RUNS.mkdir(parents=True, exist_ok=True)
    folder, about = data()
    REPORT["data"] = about
    REPORT["machine"] = {"python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        REPORT["machine"]["gpu"] = torch.cuda.get_device_name(0)
    save()
    trainer = ["trainer=cpu"] if ON_CPU else ["trainer=gpu"]
    common = [
        *trainer, "dataset=imagefolder", f"path={folder}", "dataset.num_classes=10",
        f"ipc={IPC}", f"iterations={max(ITERATIONS, SYNC_STEP + 2)}", f"batch_real={BATCH_REAL}",
        f"eval.epochs={EVAL_EPOCHS}", f"eval.ncfm_epochs={EVAL_EPOCHS}", "eval.num_models=2",
        "save_every=1000", "log_images_every=1000",
    ]  # fmt: skip
    if ON_CPU:
        common += ["model.width=8"]
    chosen = os.environ.get("METHODS")
    methods = [m for m in METHODS if not chosen or m in chosen.split(",")]

    def train(name: str, method: str, extra: list[str]) -> dict:
        args = [a.replace(POOL, str(RUNS / "pools")) for a in METHODS[method]]
        args += TOY.get(method, []) if ON_CPU else []
        counter = SyncCounter()
        record = run_job("dmcondense.train", [*common, *args, *extra], name, [counter])
        record["syncs_per_step"], record["sync_places"] = counter.count, counter.where
        return add(record)

    # 1. every method, fp32 and bf16-mixed
    for method in methods:
        for precision in PRECISIONS:
            name = f"train_{method}_{precision}"
            if not skip_if_late(name, 10):
                train(name, method, [f"trainer.precision={precision}"])
    # 2. DM compiled
    if "dm" in methods and not skip_if_late("train_dm_compile", 20):
        backend = ["+method.compile_backend=eager"] if ON_CPU else []
        train("train_dm_compile", "dm", ["compile=true", *backend])
    # 3. one configuration twice, bit for bit: one the support table says repeats on CUDA
    # (trainer.deterministic, and no DSA transform whose backward uses grid_sample's atomics)
    first = f"train_{methods[0]}_32-true"
    repeatable = ["trainer.precision=32-true", "trainer.deterministic=true",
                  "augment.strategy=color_crop_cutout"]  # fmt: skip
    if not skip_if_late("repeat", 20):
        train("repeat_first", methods[0], repeatable)
        again = train("repeat", methods[0], repeatable)
        a, b = synthetic_digest("repeat_first"), synthetic_digest("repeat")
        again["repeats_bit_for_bit"] = a is not None and a == b
        REPORT["repeats_bit_for_bit"] = again["repeats_bit_for_bit"]
        save()
    # 4. evaluate, pretrain, nas once each
    condensed = RUNS / first
    jobs = [
        ("evaluate", "dmcondense.evaluate", [*common, f"condensed={condensed}"]),
        ("pretrain", "dmcondense.pretrain",
         [*common, "pool.size=1", "pool.epochs=1", f"pool.root={RUNS / 'pools'}"]),
        ("nas", "dmcondense.nas",
         [*common, f"condensed={condensed}", "space.depth=[1,2]", "space.width=[8]",
          "space.activation=[relu]", "space.norm=[instancenorm]", "space.pooling=[avgpool]",
          "space.sample=all", "proxy.epochs=2", "ground_truth.epochs=1",
          "proxies=[condensed,random]", "bootstrap=100",
          f"ground_truth.cache={RUNS / 'nas_ground_truth'}"]),
    ]  # fmt: skip
    for name, module, overrides in jobs:
        if not skip_if_late(name, 10):
            add(run_job(module, overrides, name))
    failed = [r["name"] for r in REPORT["runs"] if r.get("returncode", 0) not in (0, 2)]
    REPORT["failed"] = failed
    REPORT["seconds"] = round(time.time() - STARTED, 1)
    save()
    print(f"done in {REPORT['seconds']} s; failed: {', '.join(failed) or 'none'}; {OUT}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
