"""Docs that cannot rot: every `bash` and `python` block of the docs runs here, at toy size.

Pages are found by glob (docs/**/*.md, README.md, benchmarks/README.md), so a page added later
is covered without a change here. A fenced block whose language is `bash` or `python` runs,
unless the line directly above its fence is `<!-- norun: reason -->` (GPU, download, hours,
SLURM, the authors' code). Output examples are fenced as `text`.

The toy-size rule (the same words a test of the suite uses, `tests/helpers/inprocess.py`):
- a `bash` line is `python -m dmcondense.<job> ARGS` (or `.venv/bin/python -m ...`,
  `dmcondense-<job> ARGS`, `make train ARGS="..."`); it runs in this process through the job's
  entry point with TOY[job] appended (Hydra keeps the last value of a key), plus POOL when the
  run needs a pretrained pool and METHOD's words of the method it names, and `data_dir=` a
  folder the pages share (pools and whole-data scores are made once); any other command fails
  the test (mark it `norun`, or teach this module its toy size);
- in arguments, a value with `<...>` in it, or `RUN`, is a run folder made earlier on the page:
  for `condensed=` the last train run's, for any other key the last run of the same job; and
  `FOLDER` is a folder of grey 32 x 32 PNGs made for the page;
- a `python` block runs with `dmcondense.condense` / `evaluate` given the same toy words and
  `train_on` one epoch; a string literal with `<...>` in it is the page's last train run folder.
A page's blocks run in order, in a fresh working folder, so a block may use the run before it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import inprocess
from helpers.fixtures import write_imagefolder

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([*ROOT.glob("docs/**/*.md"), ROOT / "README.md", ROOT / "benchmarks" / "README.md"])
RUNNABLE = {"bash", "python"}
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)
NORUN = re.compile(r"^\s*<!-- norun: (?P<reason>\S.*?) -->\s*$")

TOY = {
    "train": ["model.width=8", "batch_real=4", "iterations=3", "eval.epochs=1",
              "eval.ncfm_epochs=1", "eval.num_models=1"],
    "evaluate": ["model.width=8", "eval.epochs=1", "eval.ncfm_epochs=1", "eval.num_models=1",
                 "whole_epochs=1"],
    "pretrain": ["model.width=8", "pool.size=1", "pool.epochs=1"],
    # the sizes the pages' own MTT and DATM blocks name, so their train runs find these experts
    "experts": ["model.width=8", "experts.size=2", "experts.epochs=2"],
    "continual": ["model.width=8", "batch_real=4", "iterations=3", "eval.epochs=1",
                  "eval.num_models=1", "steps=2", "score_steps=last"],
    "nas": ["space.sample=2", "space.width=[8]", "space.depth=[1,2]", "space.pooling=[maxpool]",
            "proxy.epochs=1", "ground_truth.epochs=1", "bootstrap=20"],
}  # fmt: skip
POOL = ["pool.size=1", "pool.epochs=1"]
METHOD = {  # a method's own toy words, when the command names it
    "method=ncfm": ["method.num_freqs=16"],
    "method=idm": ["method.batch_train=16", "method.model_train_steps=1"],
}
JOBS = {
    "train": inprocess.train, "evaluate": inprocess.evaluate, "pretrain": inprocess.pretrain,
    "continual": inprocess.continual, "nas": inprocess.nas, "experts": inprocess.experts,
}  # fmt: skip


def blocks(page: Path) -> list[tuple[int, str, str, str | None]]:
    """(line, language, body, norun reason or None) for each fenced block of `page`."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start())
        above = text.splitlines()[line - 1] if line else ""
        marker = NORUN.match(above)
        found.append((line + 1, match["lang"], match["body"], marker["reason"] if marker else None))
    return found


def commands(body: str) -> list[list[str]]:
    """The words of each command of a bash block (continuation lines joined, comments off)."""
    joined = re.sub(r"<[^<>\n]+>", "<run>", re.sub(r"\\\n", " ", body))
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]


def job_and_args(words: list[str]) -> tuple[str, list[str]]:
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # OMP_NUM_THREADS=1 ...
        words = words[1:]
    if words[:2] == ["make", "train"]:
        extra = [w.removeprefix("ARGS=") for w in words[2:] if w.startswith("ARGS=")]
        return "train", [a for w in extra for a in shlex.split(w)]
    if len(words) >= 3 and words[0].endswith("python") and words[1] == "-m":
        module = words[2]
        if module.startswith("dmcondense.") and module.split(".")[1] in JOBS:
            return module.split(".")[1], words[3:]
    if words and words[0].startswith("dmcondense-") and words[0][11:] in JOBS:
        return words[0][11:], words[1:]
    raise AssertionError(
        f"`{shlex.join(words)}`: not a command the docs test can shrink; mark its block "
        f"<!-- norun: reason --> or teach tests/test_docs.py its toy size"
    )


class Page:
    """A page's working state: its folder, its image folder, each job's last run folder."""

    def __init__(self, folder: Path, data_dir: Path) -> None:
        self.folder, self.runs, self._images = folder, {}, None
        self.data_dir = data_dir  # shared by the pages: pools and whole-data scores made once

    def images(self) -> Path:
        if self._images is None:
            self._images = self.folder / "grey_folder"
            write_imagefolder(self._images, classes=3, per_class=12, size=32, mode="L")
        return self._images

    def substitute(self, arg: str, job: str) -> str:
        key, sep, value = arg.partition("=")
        if sep and (re.search(r"<[^>]+>", value) or value == "RUN"):
            made_by = "train" if key in ("condensed", "synthetic") else job
            assert made_by in self.runs, f"{arg}: no {made_by} run before it on this page"
            return f"{key}={self.runs[made_by]}"
        if sep and value == "FOLDER":
            return f"{key}={self.images()}"
        return arg

    def run_bash(self, body: str) -> None:
        for words in commands(body):
            job, args = job_and_args(words)
            args = [self.substitute(a, job) for a in args]
            toy = [*TOY[job], f"data_dir={self.data_dir}"]
            if job in ("train", "evaluate") and any(
                a in args for a in ("method=ncfm", "pool.build=auto", "eval.labels=soft")
            ):
                toy += POOL
            toy += [w for a in args for w in METHOD.get(a, [])]
            result = JOBS[job](*args, *toy)
            assert result.returncode == 0, f"`{shlex.join(words)}`: {result.stderr[-2000:]}"
            ran = re.findall(r"^run folder: (.+)$", result.stdout, re.M)
            if ran:
                self.runs[job] = ran[-1]

    def run_python(self, body: str, namespace: dict) -> None:
        if "train" in self.runs:
            body = re.sub(r"\"[^\"\n]*<[^>\n]+>[^\"\n]*\"", repr(self.runs["train"]), body)
        exec(compile(body, "<docs block>", "exec"), namespace)
        run = namespace.get("run")
        if run is not None and hasattr(run, "folder"):
            self.runs["train"] = str(run.folder)


@pytest.fixture
def toy_api(monkeypatch):
    """dmcondense.condense / evaluate / train_on at toy size."""
    from dmcondense import api

    condense, evaluate, train_on = api.condense, api.evaluate, api.train_on

    def toy_condense(*args, overrides=(), **kwargs):
        return condense(*args, overrides=[*overrides, *TOY["train"]], **kwargs)

    def toy_evaluate(*args, overrides=(), **kwargs):
        return evaluate(*args, overrides=[*overrides, *TOY["evaluate"]], **kwargs)

    def toy_train_on(*args, **kwargs):
        return train_on(*args, **{**kwargs, "epochs": 1})

    monkeypatch.setattr(api, "condense", toy_condense)
    monkeypatch.setattr(api, "evaluate", toy_evaluate)
    monkeypatch.setattr(api, "train_on", toy_train_on)


@pytest.fixture(scope="session")
def docs_data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("docs_data")


def runnable_pages() -> list[Path]:
    return [p for p in PAGES if any(lang in RUNNABLE and not why for _, lang, _, why in blocks(p))]


@pytest.mark.parametrize("page", runnable_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_runnable_block_of_a_page_runs_at_toy_size(
    page: Path, tmp_path: Path, monkeypatch, toy_api, docs_data_dir: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    state, namespace = Page(tmp_path, docs_data_dir), {}
    for line, lang, body, why in blocks(page):
        if lang not in RUNNABLE or why:
            continue
        try:
            if lang == "bash":
                state.run_bash(body)
            else:
                state.run_python(body, namespace)
        except Exception as error:
            raise AssertionError(f"{page.relative_to(ROOT)}:{line}: {error}") from error


def test_every_block_is_either_runnable_text_or_marked_with_a_reason() -> None:
    problems = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        for number, text in enumerate(lines, 1):
            if text.lstrip().startswith("<!-- norun") and not NORUN.match(text):
                problems.append(f"{page.relative_to(ROOT)}:{number}: a norun marker needs a reason")
            if NORUN.match(text) and not (
                number < len(lines) and lines[number].lstrip().startswith("```")
            ):
                problems.append(
                    f"{page.relative_to(ROOT)}:{number}: a norun marker must sit above a fence"
                )
        for line, lang, _, _ in blocks(page):
            if not lang:
                problems.append(f"{page.relative_to(ROOT)}:{line}: a fence without a language")
    assert problems == []


def test_the_toy_rule_finds_every_command_it_must_shrink() -> None:
    assert job_and_args(shlex.split('make train ARGS="ipc=1 seed=3"')) == (
        "train",
        ["ipc=1", "seed=3"],
    )
    assert job_and_args(["OMP_NUM_THREADS=1", "python", "-m", "dmcondense.nas", "a=1"]) == (
        "nas",
        ["a=1"],
    )
    with pytest.raises(AssertionError, match="norun"):
        job_and_args(["python", "benchmarks/leaderboard.py"])
    assert commands("python -m dmcondense.train \\\n    ipc=1   # a comment\n\n") == [
        ["python", "-m", "dmcondense.train", "ipc=1"]
    ]


def test_the_readme_links_only_to_files_that_exist() -> None:
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert targets and missing == []


def test_the_site_builds_strict(tmp_path: Path) -> None:
    """`mkdocs build --strict`: a broken internal link, anchor or image fails it."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "index.html").exists()
    # Every equation became MathML: none left as TeX, no TeX command the converter passed through.
    unrendered = [
        f"{page.relative_to(tmp_path)}: {math[:120]}"
        for page in tmp_path.rglob("*.html")
        for math in re.findall(r"<math.*?</math>|class=\"arithmatex\"", page.read_text(), re.S)
        if "\\" in math or "arithmatex" in math
    ]
    assert unrendered == []
