"""MkDocs hooks: the config reference generated from conf/ at build time (so it cannot drift
from the files), and equations rendered to MathML at build time (no script, no network: the
site is read offline too).

A page asks for a group's reference with a line `<!-- config: GROUP -->` (GROUP: `config`,
`evaluate`, `continual`, `nas`, `pretrain` for a top-level file, or a folder of conf/).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
MARKER = re.compile(r"^<!-- config: ([\w/]+) -->$", re.M)
KEY = re.compile(r"^(?P<indent> *)(?P<key>[\w.]+):(?P<value>[^#]*?)\s*(?:#\s?(?P<note>.*))?$")


def header(path: Path) -> str:
    """The file's leading comment, as one paragraph (`# @package` lines left out)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def keys(path: Path) -> list[tuple[str, str, str]]:
    """(dotted key, value, comment) for each key of a config file, `defaults` and `hydra` left
    out; a comment on the lines right below a key continues its note."""
    rows: list[list[str]] = []
    stack: list[tuple[int, str]] = []
    skipping: int | None = None
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("- "):
            continue
        if line.lstrip().startswith("#"):
            if rows and line.startswith(" ") and not line.startswith("#"):
                rows[-1][2] = f"{rows[-1][2]} {line.strip().lstrip('#').strip()}".strip()
            continue
        match = KEY.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        if skipping is not None and indent > skipping:
            continue
        skipping = None
        if indent == 0 and match["key"] in ("defaults", "hydra"):
            skipping = 0
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        name = ".".join([*(k for _, k in stack), match["key"]])
        stack.append((indent, match["key"]))
        rows.append([name, match["value"].strip(), (match["note"] or "").strip()])
    return [tuple(r) for r in rows]


def cell(text: str) -> str:
    return html.escape(text).replace("|", "\\|")


def table(path: Path) -> str:
    lines = ["| key | default | what |", "| --- | --- | --- |"]
    for name, value, note in keys(path):
        shown = f"`{cell(value)}`" if value else ""
        lines.append(f"| `{name}` | {shown} | {cell(note)} |")
    return "\n".join(lines)


def group(name: str) -> str:
    single = CONF / f"{name}.yaml"
    if single.is_file():
        return f"*`conf/{name}.yaml`:* {cell(header(single))}\n\n{table(single)}\n"
    folder = CONF / name
    if not folder.is_dir():
        raise ValueError(f"<!-- config: {name} -->: no conf/{name}.yaml and no conf/{name}/")
    parts = []
    options = sorted(folder.glob("*.yaml"))
    if name.endswith("experiment"):  # presets: one line each
        parts.append("| option | what it sets |\n| --- | --- |")
        parts += [f"| `{p.stem}` | {cell(header(p))} |" for p in options]
        return "\n".join(parts) + "\n"
    for option in options:
        parts.append(f"### `{name}={option.stem}`\n\n{cell(header(option))}\n\n{table(option)}\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, **_: object) -> str:
    return MARKER.sub(lambda m: group(m.group(1)), markdown)


MATH = re.compile(
    r'<(?P<tag>div|span) class="arithmatex">\s*(?:\\\[(?P<block>.*?)\\\]|\\\((?P<inline>.*?)\\\))'
    r"\s*</(?P=tag)>",
    re.S,
)


def on_page_content(content: str, **_: object) -> str:
    """Equations (pymdownx.arithmatex, generic mode) to MathML, which browsers draw natively."""
    from latex2mathml.converter import convert

    def render(match: re.Match) -> str:
        block = match["block"] is not None
        tex = html.unescape(match["block"] if block else match["inline"])
        return convert(tex.strip(), display="block" if block else "inline")

    return MATH.sub(render, content)
