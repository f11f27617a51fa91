"""Every `dtf …` command line in the docs names a real command with real options.

The command lines are read from README.md, SECURITY.md, docs/, docker/ and ci/ (fenced code blocks,
shell lines of YAML/compose/script files, and inline code spans), split with shlex, and walked
through the real click command tree behind `dtf`: each sub-command must exist and each
`--option` must be one that command takes. Every repository path a documented command
names (a suite under examples/ or ci/suites/) must exist. A synopsis such as
`dtf run SUITE [--timeout S]` is checked the same way, brackets and all.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Iterator

import pytest
import typer.main

from dtf.cli import app

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["README.md", "SECURITY.md", "docs", "docker", "ci", "examples"]
SUFFIXES = {".md", ".yml", ".yaml", ".sh", ".cpu", ".cuda", ""}
_INLINE = re.compile(r"`((?:\.venv/bin/)?dtf [^`]+)`")
_LINE = re.compile(r"(?:^|[\s;&|(]|\$\s?)((?:\S*/)?dtf (?:[a-z][-a-z]*)(?:[^#\n]*))")


# What may stand before a command on its line: a prompt, a list dash, exec/nohup/sudo, an
# environment assignment, a YAML key (run:, script:, command:), a shell connective.
_PREFIX = re.compile(r"(?:\s*(?:\$|-|exec|nohup|sudo|time|run:|script:|command:|[A-Za-z_]+=\S*|&&|\|\||;|\||\()\s*)*\s*")


def _files() -> Iterator[Path]:
    for name in SOURCES:
        path = REPO / name
        if path.is_file():
            yield path
        elif path.is_dir():
            for found in sorted(path.rglob("*")):
                if found.is_file() and (found.suffix in SUFFIXES or found.name.startswith("Dockerfile")):
                    yield found


def _code_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Lines that are commands: inside fenced blocks of Markdown, every line of other files."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    markdown = path.suffix == ".md"
    fenced = False
    joined = ""
    start = 0
    for number, line in enumerate(lines, 1):
        if markdown and line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if markdown and not fenced:
            for match in _INLINE.finditer(line):
                yield number, match.group(1)
            continue
        if not joined:
            start = number
        if line.rstrip().endswith("\\"):
            joined += line.rstrip()[:-1] + " "
            continue
        if not markdown:
            line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0]
        yield start, joined + line
        joined = ""


def _commands() -> Iterator[tuple[str, str]]:
    for path in _files():
        for number, line in _code_lines(path):
            for match in _LINE.finditer(line):
                if not _PREFIX.fullmatch(line[: match.start(1)]):
                    continue  # `ACL SETUSER dtf on ...`, a table cell "dtf vs ...": not a command
                text = match.group(1)
                head = text.split()[0]
                if head not in ("dtf", ".venv/bin/dtf", "$VENV/bin/dtf") and not head.endswith("/bin/dtf"):
                    continue
                yield f"{path.relative_to(REPO)}:{number}", text.strip()


def _words(text: str) -> list[str]:
    text = re.split(r"\s(?:>|2>|&&|\|\||\||;)\s|\s&$|\s&\s", text)[0]
    text = text.replace("[", " ").replace("]", " ").replace("…", " ").replace("...", " ")
    try:
        return shlex.split(text, comments=True)
    except ValueError:
        return text.split()


def _options(command: Any) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    return names


def _choices(command: Any, option: str) -> set[str]:
    """The values an option accepts, where it declares them (a Choice type or a checked list in its help)."""
    for param in command.params:
        if option in getattr(param, "opts", []):
            declared = getattr(getattr(param, "type", None), "choices", None)
            if declared:
                return {str(c) for c in declared}
            listed = re.match(r"([a-z0-9]+(?:, [a-z0-9]+)* or [a-z0-9]+)\b", getattr(param, "help", "") or "")
            return set(re.findall(r"[a-z0-9]+", listed.group(1).replace(" or ", " "))) if listed else set()
    return set()


ROOT = typer.main.get_command(app)
COMMANDS = sorted(set(_commands()))


def test_the_docs_hold_many_command_lines() -> None:
    assert len(COMMANDS) > 40, COMMANDS


@pytest.mark.parametrize(("where", "line"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_exists_with_its_options(where: str, line: str) -> None:
    words = _words(line)[1:]
    command: Any = ROOT  # typer's own (vendored) click types: walked by duck typing
    path = ["dtf"]
    while getattr(command, "commands", None) is not None and words and not words[0].startswith("-"):
        if not re.fullmatch(r"[a-z][-a-z]*", words[0]):
            break
        sub = command.commands.get(words[0])
        if sub is None:
            pytest.fail(f"{where}: `{line}`: dtf has no command {' '.join(path[1:] + [words[0]])!r}")
        command = sub
        path.append(words.pop(0))
    known = _options(command)
    for index, word in enumerate(words):
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            assert name in known, f"{where}: `{line}`: `{' '.join(path)}` has no option {name} (it has {sorted(known)})"
            value = word.split("=", 1)[1] if "=" in word else (words[index + 1] if index + 1 < len(words) else "")
            choices = _choices(command, name)
            if choices and re.fullmatch(r"[a-z0-9][-a-z0-9|]*", value):
                for one in value.split("|"):
                    assert one in choices, f"{where}: `{line}`: {name} takes {sorted(choices)}, not {one!r}"
        elif re.fullmatch(r"(examples|ci/suites)/[\w./-]+\.ya?ml", word):
            assert (REPO / word).is_file(), f"{where}: `{line}`: {word} does not exist"
