"""The layering of src/dmcondense, read from the imports themselves: jobs on top, libraries below.

Every module belongs to one room; a room may import only the rooms listed for it. Imports inside
functions count too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dmcondense"

# Module (dotted, below dmcondense) or package prefix -> room. The longest match wins.
ROOMS = {
    "": "package",  # dmcondense/__init__.py: CONF_DIR, and load_synthetic on first use
    "errors": "base",
    "rng": "base",
    "atomic": "base",
    "hostmem": "base",
    "progress": "base",
    "synthetic": "synthetic",
    "io": "synthetic",
    "export": "synthetic",
    "sets": "synthetic",
    "data": "data",
    "models": "models",
    "augment": "augment",
    "methods": "methods",
    "evaluation": "evaluation",
    "glue": "glue",
    "jobs": "jobs",
    "cli": "entry",
    "api": "entry",
    "train": "entry",
    "evaluate": "entry",
    "continual": "entry",
    "pretrain": "entry",
    "experts": "entry",
    "nas": "entry",
    "__main__": "entry",
}

LIBRARIES = {"base", "data", "models", "augment", "synthetic", "methods", "evaluation"}
ALLOWED = {
    "package": {"base", "synthetic", "entry"},  # load_synthetic and the Python API, on first use
    "base": {"base"},
    "data": {"base", "data"},
    "models": {"base", "models"},
    "augment": {"base", "augment"},
    "synthetic": {"base", "data", "synthetic"},
    "methods": {"base", "data", "models", "augment", "synthetic", "methods"},
    "evaluation": {"base", "data", "models", "augment", "synthetic", "evaluation"},
    "glue": LIBRARIES | {"glue"},
    "jobs": LIBRARIES | {"package", "glue", "jobs"},
    "entry": LIBRARIES | {"package", "glue", "jobs", "entry"},
}


def room_of(module: str) -> str:
    """`module` is dotted below the package ("jobs.build"); the room of its longest prefix."""
    parts = module.split(".") if module else []
    for n in range(len(parts), -1, -1):
        prefix = ".".join(parts[:n])
        if prefix in ROOMS:
            return ROOMS[prefix]
    raise KeyError(module)


def imported_modules(path: Path, package: str) -> set[str]:
    """The modules of `package` that the file at `path` imports (dotted, below the package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name == package or name.startswith(package + "."):
                found.add(name.removeprefix(package).removeprefix("."))
    return found


def violations(root: Path, package: str = "dmcondense") -> list[str]:
    """`importer imports imported (room -> room)` for every import the rules forbid."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).with_suffix("")
        parts = [p for p in relative.parts if p != "__init__"]
        importer = ".".join(parts)
        here = room_of(importer)
        for imported in sorted(imported_modules(path, package)):
            there = known_room(imported)
            if there is not None and there not in ALLOWED[here]:
                found.append(f"{importer or package} imports {imported} ({here} -> {there})")
    return found


def known_room(imported: str) -> str | None:
    """The room of an imported name; `from dmcondense.x import name` also lists "x.name",
    which may be a function rather than a module: fall back to its module's room."""
    try:
        return room_of(imported)
    except KeyError:
        return None


def test_every_module_has_a_room() -> None:
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).with_suffix("")
        room_of(".".join(p for p in relative.parts if p != "__init__"))


def test_no_import_breaks_the_layering() -> None:
    assert violations(PACKAGE) == []


BROKEN = [  # (file, an import added to it, the violation the check must name)
    ("methods/dm.py", "from dmcondense.jobs import build",
     "methods.dm imports jobs (methods -> jobs)"),
    ("evaluation/score.py", "import dmcondense.jobs.train",
     "evaluation.score imports jobs.train (evaluation -> jobs)"),
    ("data/spec.py", "    from dmcondense.glue.callbacks import X",
     "data.spec imports glue.callbacks (data -> glue)"),
    ("models/convnet.py", "from dmcondense.methods.base import Base",
     "models.convnet imports methods.base (models -> methods)"),
    ("glue/callbacks.py", "from dmcondense.jobs.common import load_data",
     "glue.callbacks imports jobs.common (glue -> jobs)"),
]  # fmt: skip


@pytest.mark.parametrize(("file", "line", "expected"), BROKEN)
def test_the_check_finds_an_import_that_breaks_the_rule(
    tmp_path: Path, file: str, line: str, expected: str
) -> None:
    """A copy of the package with one forbidden import added: the check names it."""
    root = tmp_path / "dmcondense"
    for path in PACKAGE.rglob("*.py"):
        target = root / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    broken = root / file
    body = broken.read_text()
    if line.startswith(" "):  # an import inside a function
        body += f"\n\ndef _added():\n{line}\n"
    else:
        body += f"\n{line}\n"
    broken.write_text(body)
    found = violations(root)
    assert expected in found
    assert all(f.split(" imports ")[0] == expected.split(" imports ")[0] for f in found)
