"""RDED's adapter for benchmarks/parity_official.py: run the authors' selection on our data.

Their code (LINs-lab/RDED) reads an image folder, crops, scores, selects and stitches in
`synthesize.main.init_images(args, model)` and writes each class's images as JPEG files. The
adapter, in a scratch copy of their checkout:
  - writes our training split as their folder layout, <work>/train/<class:05d>/<index>.png
    (lossless; their ImageFolder opens every image as RGB, so MNIST arrives grey in 3 channels);
  - parses their argument.py with the flags of their CIFAR-10 script at this budget (--subset
    cifar10 --arch-name conv3 --factor 1 --num-crop N --mipc M --ipc I --stud-name conv3), then
    sets the paths, the classes, the input size of our images and workers 0;
  - replaces their ImageNet mean and std (`normalize`, `denormalize` of synthesize.utils, which
    synthesize.main imports by name) with our split's, which our observer was trained with;
  - hands `init_images` our observer (network 0 of our convnet_bn pool, at its trained weights,
    in eval mode; for one-channel data it reads the first of their three equal channels): their
    `load_model` would read ./data/pretrain_models/cifar10_conv3.pth, their own checkpoint;
  - seeds Python's, NumPy's and torch's global generators with the run's seed (their crops and
    their image order come from them);
  - wraps their `save_images` to keep the images it is given (after their denormalise, before
    the JPEG file), quantised as their file writer quantises, (x * 255).astype(uint8), and
    their ImageFolder to learn which real images each class's first `ipc` are (`--score-init`
    scores those: random real images drawn by their shuffle).
Text edits of the copy (`EDITS`): `.cuda()` calls go (the runs are on the CPU).
"""

from __future__ import annotations

import argparse
import importlib
import random
import re
import sys
import time
from pathlib import Path

EDITS: tuple[tuple[str, str, str, str], ...] = (
    ("synthesize/utils.py", r"\.cuda\(\)", "", "their selector moves tensors to CUDA: CPU runs"),
)
FILES = ("argument.py", "synthesize/main.py", "synthesize/utils.py", "synthesize/models.py",
         "validation/utils.py")  # fmt: skip


def apply_edits(copy: Path) -> list[str]:
    """EDITS on the scratch copy; a line for each that changed something."""
    applied = []
    for name, pattern, replacement, why in EDITS:
        path = copy / name
        text = path.read_text()
        edited, count = re.subn(pattern, replacement, text)
        if count:
            path.write_text(edited)
            applied.append(f"{name}: {count} x {why}")
    return applied


def write_folder(unit, labels, root: Path) -> list[Path]:
    """Our split's [0, 1] images as PNG files, <root>/<class:05d>/<index:06d>.png."""
    import numpy as np
    from PIL import Image

    paths = []
    pixels = (unit.clamp(0, 1) * 255).round().to(dtype=__import__("torch").uint8).numpy()
    for index, (image, label) in enumerate(zip(pixels, labels.tolist(), strict=True)):
        folder = root / f"{label:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{index:06d}.png"
        array = image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0))
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


def run_rded(args: argparse.Namespace) -> dict:
    """Their selection on the saved data with our observer; the set, its start and timing."""
    import numpy as np
    import torch
    from torchvision import transforms

    from dmcondense.models.registry import build_model

    torch.set_num_threads(args.threads)
    data = torch.load(args.data, weights_only=False)
    copy = Path(args.copy).resolve()
    edits = apply_edits(copy)
    work = Path(args.out).resolve().parent / "official_rded"
    work.mkdir(parents=True, exist_ok=True)
    mean, std = list(data["mean"]), list(data["std"])
    channels = len(mean)
    view = (1, -1, 1, 1)
    unit = data["train_images"] * torch.tensor(std).view(view) + torch.tensor(mean).view(view)
    labels = data["train_labels"]
    nclass = len(data["class_names"])
    train_dir = work / "train"
    if not train_dir.is_dir():
        write_folder(unit, labels, train_dir)

    size = int(unit.shape[-1])
    flags = ["--subset", "cifar10", "--arch-name", "conv3", "--factor", str(args.crop_factor),
             "--num-crop", str(args.num_crop), "--mipc", str(args.batch_real),
             "--ipc", str(args.ipc), "--stud-name", "conv3"]  # fmt: skip
    here = Path.cwd()
    sys.path.insert(0, str(copy))
    sys.argv = ["main.py", *flags]
    import os

    os.chdir(work)  # argument.py makes ./exp/<name> under the working folder
    their_args = importlib.import_module("argument").args
    their_utils = importlib.import_module("synthesize.utils")
    their_main = importlib.import_module("synthesize.main")
    folder_module = importlib.import_module("validation.utils")
    their_args.train_dir = str(train_dir)
    their_args.syn_data_path = str(work / "syn")
    their_args.nclass, their_args.classes = nclass, range(nclass)
    their_args.input_size, their_args.workers = size, 0
    # Our split's statistics, 3 channels as their ImageFolder reads every image as RGB.
    rgb_mean, rgb_std = (mean * 3, std * 3) if channels == 1 else (mean, std)
    normalize = transforms.Normalize(mean=rgb_mean, std=rgb_std)
    denormalize = transforms.Compose([
        transforms.Normalize(mean=[0.0] * 3, std=[1 / s for s in rgb_std]),
        transforms.Normalize(mean=[-m for m in rgb_mean], std=[1.0] * 3),
    ])  # fmt: skip
    their_utils.normalize = their_main.normalize = normalize
    their_utils.denormalize = their_main.denormalize = denormalize

    net = build_model("convnet_bn", channels, nclass, size, width=args.width)
    record = torch.load(Path(args.pool) / "network_000.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(record["trained"])
    net.eval()

    class Observer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x[:, :channels])

    kept, chosen_paths = {}, {}
    save = their_main.save_images

    def save_images(args_, images, class_id):
        kept[class_id] = images.detach().clone()
        return save(args_, images, class_id)

    their_main.save_images = save_images
    folder_init = folder_module.ImageFolder.__init__

    def folder_init_recording(self, classes, ipc, *given, **named):
        folder_init(self, classes, ipc, *given, **named)
        chosen_paths["paths"] = list(self.image_paths)

    folder_module.ImageFolder.__init__ = folder_init_recording
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    started = time.time()
    try:
        with torch.no_grad():
            their_main.init_images(their_args, Observer().eval())
    finally:
        os.chdir(here)
    seconds = time.time() - started

    def ours(images):  # [0, 1] -> our normalised, our channels
        images = images[:, :channels]
        return (images - torch.tensor(mean).view(view)) / torch.tensor(std).view(view)

    # Their file writer's quantisation: (x * 255).astype(uint8), which truncates.
    stored = torch.cat([kept[c] for c in range(nclass)])
    stored = (stored * 255).to(torch.uint8).float() / 255
    paths = chosen_paths["paths"]
    first = []  # their shuffle's first ipc images of each class: random real images
    for c in range(nclass):
        of_class = [p for p in paths if Path(p).parent.name == f"{c:05d}"]
        first += [int(Path(p).stem) for p in of_class[: args.ipc]]
    initial = data["train_images"][torch.tensor(first)]
    return {
        "images": ours(stored),
        "labels": torch.arange(nclass).repeat_interleave(args.ipc),
        "initial_images": initial,
        "factor": 1,  # the stitched images are stored and trained on as they are
        "loop_seconds": seconds,
        "seconds_per_step": seconds,  # one selection
        "argv": flags,
        "stand_ins": edits,
    }
