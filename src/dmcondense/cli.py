"""Command-line checks that run before Hydra, so a typo gets one line that says what to fix
instead of a stack trace."""

from __future__ import annotations

import difflib
import functools
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from dmcondense import CONF_DIR
from dmcondense.errors import ConfigError, DmcondenseWarning, NonFiniteLossError

# Problems of the user's input or environment: reported as one line, not a traceback.
USER_ERRORS = (
    ConfigError,
    NonFiniteLossError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
    IsADirectoryError,
)


# Short forms users type for keys that live in a group: `path=/data/pets` is `dataset.path=...`.
SHORT_FORMS = {"path": "dataset.path", "strict": "dataset.strict"}


def expand_short_forms(argv: list[str]) -> list[str]:
    """The command line with each short-form key written out in full."""
    expanded = []
    for word in argv:
        key, sep, value = word.partition("=")
        expanded.append(f"{SHORT_FORMS[key]}={value}" if sep and key in SHORT_FORMS else word)
    return expanded


class ReadableWarnings:
    """Our warnings (DmcondenseWarning) as `warning: <message>` lines on stderr, the first
    `limit` of them; the rest are counted and `summary` says how many. Other libraries'
    warnings keep Python's format."""

    def __init__(self, limit: int = 10) -> None:
        self.limit, self.shown, self.hidden = limit, 0, 0
        self._python_format = warnings.showwarning

    def install(self) -> ReadableWarnings:
        warnings.showwarning = self.show
        return self

    def show(self, message, category, filename, lineno, file=None, line=None) -> None:
        if not issubclass(category, DmcondenseWarning):
            self._python_format(message, category, filename, lineno, file, line)
        elif self.shown < self.limit:
            self.shown += 1
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            self.hidden += 1

    def summary(self) -> None:
        if self.hidden:
            print(f"warning: {self.hidden} more warnings like these were not shown",
                  file=sys.stderr, flush=True)  # fmt: skip


def run_entry_point(hydra_main: Callable[[], None], config_name: str = "config") -> None:
    """What both entry points do around Hydra: expand the short forms, check the command line
    (one line and exit 2 on a typo), print our warnings readably, then run."""
    sys.argv[1:] = expand_short_forms(sys.argv[1:])
    check_command_line(sys.argv[1:], config_name=config_name)
    notices = ReadableWarnings().install()
    try:
        hydra_main()
    finally:
        notices.summary()


def fail(error: BaseException | str) -> NoReturn:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def refuse_run(error: BaseException | str) -> NoReturn:
    """`fail` from inside a Hydra job. The run folder Hydra made for the job goes first when it
    holds nothing but Hydra's own records (`.hydra/` and the job's log), so a refused command
    leaves no empty run folder behind; a folder with anything else in it (a run to resume, a
    set kept after a diverging loss) stays as it is."""
    discard_refused_run_folder()
    fail(error)


def discard_refused_run_folder() -> None:
    """Remove the running Hydra job's folder when it holds nothing but Hydra's own records."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        folder = Path(hydra_cfg.runtime.output_dir)
        own = {name for name in (hydra_cfg.output_subdir, f"{hydra_cfg.job.name}.log") if name}
        if folder.is_dir() and {path.name for path in folder.iterdir()} <= own:
            shutil.rmtree(folder, ignore_errors=True)


def groups() -> dict[str, list[str]]:
    """Config group -> its option names, read from conf/."""
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(CONF_DIR.iterdir())
        if d.is_dir() and d.name != "hydra"
    }


def _values(override) -> list[str]:
    if override.is_sweep_override():
        return [str(v) for v in override.sweep_string_iterator()]
    value = override.value()
    return [] if value is None else [str(value)]


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_command_line(argv: list[str], config_name: str = "config") -> None:
    """Exit with one line when an override names an unknown group option or key."""
    problem = command_line_problem(argv, config_name)
    if problem:
        fail(problem)


def command_line_problem(argv: list[str], config_name: str = "config") -> str | None:
    """The one line that says what is wrong with the command line, or None (the Python API
    raises it, the entry points print it)."""
    words = [a for a in argv if not a.startswith("-") and "=" in a]
    try:
        overrides = OverridesParser.create().parse_overrides(words)
    except Exception as error:  # Hydra's grammar errors are long; keep their first line
        return f"cannot parse the command line: {error}"
    options = groups()
    first_choice = []
    for o in overrides:
        key = o.key_or_group
        if key.startswith("hydra") or o.is_add() or o.is_delete() or o.is_force_add():
            continue
        if key in options:
            for value in _values(o):
                if value not in options[key] and value != "null":
                    return (
                        f"unknown {key} '{value}'{_suggest(value, options[key])}; "
                        f"choose one of: {', '.join(options[key])}"
                    )
            chosen = _values(o)
            if chosen:
                first_choice.append(f"{key}={chosen[0]}")
    folders, known = _keys_and_folders(config_name, tuple(first_choice))
    problem = _output_folder_problem(argv, overrides, folders)
    if problem:
        return problem
    for o in overrides:
        key = o.key_or_group
        if key.startswith("hydra") or key in options or o.is_add() or o.is_force_add():
            continue
        if key not in known:
            return (
                f"unknown key '{key}'{_suggest(key, sorted(known))}; check the spelling, "
                f"or add it with +{key}=... if you mean a new key"
            )
    return None


def unwritable_folder(path: str | Path) -> str | None:
    """Why the folder `path` cannot be created and written, or None when it can.

    Looks at the nearest part of `path` that exists: a file there, a folder without write
    permission, or one where no folder can be made (root passes any permission check, so an
    empty folder is made there and removed again: read-only and special file systems fail it).
    """
    existing = Path(path).expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".dmcondense-probe-", dir=existing))
    except OSError as error:
        return f"no folder can be made in {existing} ({error.strerror})"
    return None


INFO_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--resolve"}


@functools.cache
def _keys_and_folders(config_name: str, choices: tuple[str, ...]) -> tuple[dict, frozenset[str]]:
    """For the config composed with these group choices: Hydra's run and sweep folder settings,
    and every key path outside `hydra`.

    Kept per process: jobs run in process (the tests, the board) would otherwise compose the
    same tree again for every run, on top of the two composes Hydra itself makes."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=list(choices), return_hydra_config=True)
    composed = OmegaConf.to_container(cfg, resolve=False)
    hydra_cfg = composed.pop("hydra")
    folders = {"run": dict(hydra_cfg["run"]), "sweep": dict(hydra_cfg["sweep"])}
    return folders, frozenset(_all_keys(composed))


def _output_folder_problem(argv: list[str], overrides, folders: dict) -> str | None:
    """Why the run folder cannot be made, asked before Hydra creates it (a traceback otherwise);
    None when it can."""
    if INFO_FLAGS.intersection(argv):
        return None
    key = "hydra.sweep.dir" if {"-m", "--multirun"}.intersection(argv) else "hydra.run.dir"
    given = [
        str(o.value()) for o in overrides if o.key_or_group == key and not o.is_sweep_override()
    ]
    template = given[-1] if given else folders[key.split(".")[1]]["dir"]
    fixed = template.split("${")[0]  # the part before the first interpolation is known now
    folder = fixed if fixed == template or fixed.endswith(("/", "\\")) else str(Path(fixed).parent)
    problem = unwritable_folder(folder or ".")
    if problem:
        return (
            f"cannot create the output folder {template}: {problem}; "
            f"set {key}= to a writable folder"
        )
    return None


def _all_keys(node, prefix: str = "") -> set[str]:
    keys = set()
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}{k}"
            keys.add(path)
            keys |= _all_keys(v, path + ".")
    return keys
