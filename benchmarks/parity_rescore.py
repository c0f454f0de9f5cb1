"""Score a finished parity run's sets again, each as saved and with its pixels clamped to [0, 1].

    python benchmarks/parity_rescore.py \
        --row benchmarks/results/parity_ncfm_mnist_sample_ipc10_..._3x300ep.json \
        --scratch /path/to/that/run/scratch

A parity run leaves its sets in its --scratch folder (ours_<r>/synthetic.pt, theirs_<r>.pt).
NCFM's authors clamp the pixels at the start of each iteration, so the set they save after the
last iteration's steps is not clamped; ours is clamped after each iteration's last step. This
scores, with the row's own evaluation overrides and seed, every side as saved and clamped, to
measure what the clamp is worth. Scoring the sets as saved must repeat the row's accuracies
(same sets, same seed), which the script checks and reports. `--init` also scores the real
images each side started from (what the run's --score-init would have given), from the run's
real_data.pt, our run's init_indices and the initial images the adapter saved for theirs.
Writes <row stem>_rescored.json beside the row.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from parity import (  # noqa: E402
    budget_overrides,
    dataset_overrides,
    initial_summary,
    parse_args,
    save_initial_record,
    score_sets,
    summarise,
)


def clamped_copy(path: Path, out: Path) -> Path:
    """The saved set with its images clamped to [0, 1] pixels (in its normalised units)."""
    import torch

    from dmcondense.io import load_plain

    record = load_plain(path, "synthetic set")
    mean = torch.tensor(record["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(record["std"]).view(1, -1, 1, 1)
    low, high = (0 - mean) / std, (1 - mean) / std
    torch.save({**record, "images": record["images"].clamp(low, high)}, out)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", type=Path, required=True, help="the parity run's results JSON")
    parser.add_argument("--scratch", type=Path, required=True, help="the parity run's --scratch")
    parser.add_argument("--init", action="store_true", help="also score the initial images")
    given = parser.parse_args(argv)
    row = json.loads(given.row.read_text())
    words = shlex.split(row["command"])[2:]  # drop "python benchmarks/parity.py"
    args = parse_args([str(given.scratch / "official") if w == "$OFFICIAL" else w for w in words])
    overrides = dataset_overrides(args.dataset, args.data_cache) + budget_overrides(args)
    saved = {
        "ours": [given.scratch / f"ours_{r}" / "synthetic.pt" for r in range(args.runs)],
        "theirs": [given.scratch / f"theirs_{r}.pt" for r in range(args.runs)],
    }
    if given.init and args.init != "real":
        sys.exit("error: --init scores the real images a run starts from; this run used noise")
    if given.init:
        saved["theirs_init"] = [given.scratch / f"theirs_{r}_init.pt" for r in range(args.runs)]
    missing = [str(p) for paths in saved.values() for p in paths if not p.is_file()]
    if missing:
        sys.exit(f"error: {given.scratch} lacks the run's sets: {', '.join(missing)}")
    sides = dict(saved)
    for side in ("ours", "theirs"):
        paths = saved[side]
        sides[f"{side}_clamped"] = [
            clamped_copy(p, given.scratch / f"{side}_{r}_clamped.pt") for r, p in enumerate(paths)
        ]
    if given.init:
        real = given.scratch / "real_data.pt"
        sides["ours_init"] = [
            save_initial_record(p, real, given.scratch / f"ours_{r}_init.pt")
            for r, p in enumerate(saved["ours"])
        ]
    accuracies = score_sets(args, overrides, sides)
    found = {
        "row": str(given.row),
        "accuracies": accuracies,
        "as_saved": summarise(accuracies["ours"], accuracies["theirs"]),
        "clamped": summarise(accuracies["ours_clamped"], accuracies["theirs_clamped"]),
        "repeats_row": accuracies["ours"] == row["ours_accuracies"]
        and accuracies["theirs"] == row["theirs_accuracies"],
        "initial": initial_summary(accuracies),
    }
    out = given.row.with_name(given.row.stem + "_rescored.json")
    out.write_text(json.dumps(found, indent=2) + "\n")
    for name in ("as_saved", "clamped"):
        s = found[name]
        print(
            f"{name:9s} ours {s['ours_mean']:6.2f} +- {s['ours_std']:.2f}  "
            f"theirs {s['theirs_mean']:6.2f} +- {s['theirs_std']:.2f}  gap {s['gap']:+.2f}"
        )
    if found["initial"]:
        s = found["initial"]
        print(
            f"initial   ours {s['ours_init_mean']:6.2f} +- {s['ours_init_std']:.2f}  "
            f"theirs {s['theirs_init_mean']:6.2f} +- {s['theirs_init_std']:.2f}  "
            f"gain ours {s['ours_gain']:+.2f}, theirs {s['theirs_gain']:+.2f}"
        )
    print(f"as saved repeats the row: {found['repeats_row']}\nwritten: {out}")
    return found


if __name__ == "__main__":
    main()
