"""The documented commands, options, outputs and exit codes still hold (README.md, docs/).

Conventions of the pages (docs/development.md, "How the docs are tested"):
  * a ```console block is run: each `$ ` line is a command, run by bash in the repository
    root with this environment's `smtmigrate` first on PATH (`.venv/bin/smtmigrate` is that
    one); the lines up to the next `$ ` are its output (stdout and stderr), compared
    exactly after `_normalized`; a line that is only `…` stands for any lines; `$ echo $?`
    is answered with the exit status of the command before it, as in a shell. Only
    commands that run offline on the bundled fixtures go in such blocks;
  * every other `smtmigrate COMMAND …` in a page (in any block or inline code: output
    captured from servers, synopses) must name a command and only options its `--help`
    has; each `docs/commands/COMMAND.md` opens with a synopsis block that lists exactly
    the options of `smtmigrate COMMAND --help`;
  * the README's table of commands and `docs/commands/` have one entry per command.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.management import load_command_class

from smtmigrate.cli import COMMANDS

from ..conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Paths in captured output are shown as from a checkout in this directory.
SHOWN_ROOT = "/home/me/smtmigrate"
ANY_LINES = "…"
FENCE = re.compile(r"^```(\S*)\s*$")
# `smtmigrate COMMAND args` up to where the shell starts another command or a redirection.
INVOCATION = re.compile(r"(?:^|[\s/(])smtmigrate ([a-z][a-z-]*)((?:(?!smtmigrate)[^|;&>#,()\n])*)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
# Pages other issues add (PgBouncer, identities under concurrency), linked to ahead of their
# merge; a link to one counts as leading somewhere until then.
PAGES_TO_COME = frozenset({"docs/pooler.md", "docs/concurrency-identities.md"})
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    info: str
    lines: list[str]

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    found: list[Block] = []
    current: Block | None = None
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        fence = FENCE.match(line.strip()) if line.lstrip().startswith("```") else None
        if current is None and fence:
            current = Block(page, number, fence[1], [])
        elif current is not None and line.strip() == "```":
            found.append(current)
            current = None
        elif current is not None:
            current.lines.append(line)
    assert current is None, f"{page}: a code block is not closed"
    return found


def documented_options(name: str) -> set[str]:
    """The options `smtmigrate NAME --help` lists (Django's own stay out of it)."""
    command = load_command_class("smtmigrate", name.replace("-", "_"))
    command.standalone = True
    parser = command.create_parser("smtmigrate", name)
    return {
        option
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }


OPTIONS = {name: documented_options(name) for name in COMMANDS}


def invocations(text: str) -> list[tuple[str, set[str]]]:
    """Each `smtmigrate COMMAND …` in a piece of text, with the options it uses."""
    return [(m[1], set(OPTION.findall(m[2]))) for m in INVOCATION.finditer(text)]


# -- options and commands, in every page ---------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_line_uses_real_options(page):
    code = [re.sub(r"\\\n\s*", " ", "\n".join(b.lines)) for b in blocks(page)]  # joined: \
    code += INLINE_CODE.findall("\n".join(_outside_code(page.read_text(encoding="utf-8"))))
    wrong = []
    for name, used in (found for piece in code for found in invocations(piece)):
        if name not in COMMANDS:
            wrong.append(f"smtmigrate {name}: no such command")
        elif used - OPTIONS[name]:
            wrong.append(f"smtmigrate {name}: {sorted(used - OPTIONS[name])} not in its --help")
    assert not wrong, f"{page.relative_to(ROOT)}: " + "; ".join(sorted(set(wrong)))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_page_opens_with_its_whole_synopsis(name):
    page = ROOT / "docs" / "commands" / f"{name}.md"
    assert page.is_file(), f"no page for `smtmigrate {name}`"
    synopsis = blocks(page)[0]
    assert synopsis.info == "", f"{synopsis.where()}: the synopsis is a plain block"
    listed: set[str] = set()
    current = None
    for line in synopsis.lines:
        for match in INVOCATION.finditer(line):
            current = match[1]
        if current == name:
            listed |= set(OPTION.findall(line))
    assert listed == OPTIONS[name], (
        f"{synopsis.where()}: documented {sorted(listed)}, --help has {sorted(OPTIONS[name])}"
    )


def test_the_readme_table_and_the_command_pages_cover_every_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `smtmigrate ([a-z-]+)", readme, re.MULTILINE))
    assert rows == set(COMMANDS)
    for name in COMMANDS:
        assert f"](docs/commands/{name}.md)" in readme
    index = (ROOT / "docs" / "commands" / "README.md").read_text(encoding="utf-8")
    assert {m for m in re.findall(r"\]\(([a-z-]+)\.md\)", index)} == set(COMMANDS)
    pages = {p.stem for p in (ROOT / "docs" / "commands").glob("*.md")} - {"README"}
    assert pages == set(COMMANDS)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_between_pages_lead_somewhere(page):
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        goal = (page.parent / path).resolve() if path else page
        if str(goal.relative_to(ROOT)) in PAGES_TO_COME and not goal.exists():
            continue
        if not goal.exists() or (anchor and goal.suffix == ".md" and anchor not in _anchors(goal)):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings (lower case, punctuation dropped, - for spaces)."""
    names = set()
    for block_free in _outside_code(page.read_text(encoding="utf-8")):
        heading = re.match(r"^#+ (.*)$", block_free)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading[1].lower()).replace(" ", "-")
            names.add(slug)
    return names


def _outside_code(text: str) -> list[str]:
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            out.append(line)
    return out


# -- console blocks: run and compared ------------------------------------------------------

CONSOLE = [
    block for page in PAGES for block in blocks(page) if block.info == "console"
]  # fmt: skip


def _normalized(text: str) -> list[str]:
    """What varies from run to run or machine to machine: the checkout's path, times of
    day, durations."""
    text = text.replace(str(ROOT), SHOWN_ROOT)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "<time> UTC", text)
    text = re.sub(r"\b\d+(?:\.\d+)? s\b", "<n> s", text)
    return [line.rstrip() for line in text.splitlines()]


def _matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line; a line that is only `…` matches any number of lines."""
    if not expected:
        return not actual
    if expected[0] == ANY_LINES:
        return any(_matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and expected[0] == actual[0] and _matches(expected[1:], actual[1:])


def _steps(block: Block) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    for line in block.lines:
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"{block.where()}: output before the first `$ ` command"
            steps[-1][1].append(line)
    return steps


def test_there_are_console_blocks_to_run():
    pages = {block.page.name for block in CONSOLE}
    assert {"README.md", "audit.md"} <= pages


@pytest.mark.parametrize("block", CONSOLE, ids=Block.where)
@pytest.mark.slow
def test_console_block_runs_as_documented(block, tmp_path):
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "LC_ALL": "C.UTF-8"}
    env.pop("COLUMNS", None)
    status = None
    for command, expected in _steps(block):
        if command == "echo $?":
            assert expected == [str(status)], f"{block.where()}: exit status {status}"
            continue
        command = command.replace(".venv/bin/smtmigrate", "smtmigrate")
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            env={**env, "TMPDIR": str(tmp_path)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
        )
        status = done.returncode
        actual = _normalized(done.stdout)
        wanted = _normalized("\n".join(expected))
        assert _matches(wanted, actual), f"{block.where()}: `$ {command}` printed:\n" + "\n".join(
            actual
        )
