"""Every command in README.md and the sweeper's README that runs one of the project's entry points
is checked against the code, so the READMEs cannot drift from it: a dry run that composes the
command's config with Hydra's compose API (nothing runs, nothing is recorded).

Commands are read from shell code blocks (```bash, ```sh or untagged) and from inline code spans,
with backslash continuations joined and `.venv/bin/` and leading `VAR=value` assignments dropped:
- `python train.py|evaluate.py|sweep.py ...` and `make run ARGS="..."` (= `sweep.py -m ARGS`):
  composed as the app composes them; a sweep override (choice(), interval(), range(), a,b) at one
  of its values, as a trial composes it;
- `python -m pipeline.front ...` (conf/front.yaml), where a `...` word stands for settings shown
  before it and is left out;
- `python docs/<script>.py ...`: the script exists; one that composes evaluate.py's config from
  its arguments gets them composed that way;
- `python benchmarks/<script>.py ...`: the script exists and defines every `--option` named.
Placeholders: `<id>`, `<run id>` and the like become a 32-hex run id, `<a|b>` and an optional
`[x=1 | y=2]` are composed once per alternative, shell variables (`$WORKER_ID`) become 0.
"""
from __future__ import annotations

import ast
import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep

import hydra_plugins.ecosplit_optuna_sweeper.config  # noqa: F401  (the sampler and pruner groups)
from tests.conftest import CONF, REPO

READMES = ("README.md", "hydra_plugins/ecosplit_optuna_sweeper/README.md")
SHELL_BLOCKS = ("bash", "sh", "shell", "")
APPS = {"train.py": "train", "evaluate.py": "evaluate", "sweep.py": "sweep"}
DUMMY_RUN_ID = "0123456789abcdef0123456789abcdef"
# Hydra's command-line flags: not overrides (the value of --cfg/--package/--info is theirs)
FLAGS = {"-m": 0, "--multirun": 0, "--help": 0, "-h": 0, "--hydra-help": 0, "--resolve": 0,
         "--cfg": 1, "-c": 1, "--package": 1, "-p": 1, "--info": 1}


@dataclass(frozen=True)
class Command:
    where: str  # README path:line
    text: str   # the command as written, continuations joined


def _inline_spans(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Inline code spans of prose lines, per paragraph (a span may wrap onto the next line)."""
    spans, para = [], []
    for number, line in [*lines, (0, "")]:
        if line.strip():
            para.append((number, line))
            continue
        text = "\n".join(t for _, t in para)
        starts = list(itertools.accumulate([0] + [len(t) + 1 for _, t in para]))
        for m in re.finditer(r"`([^`]+)`", text):
            first = max(i for i, s in enumerate(starts[:-1]) if s <= m.start())
            spans.append((para[first][0], " ".join(m.group(1).split())))
        para = []
    return spans


def readme_commands(path: Path) -> list[Command]:
    """Every shell-block line and inline code span of a markdown file, with its line number."""
    name = str(path.relative_to(REPO))
    found, prose, block, pending = [], [], None, None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            block = line.strip()[3:].strip() if block is None else None
            prose.append((number, ""))
            continue
        if block is None:
            prose.append((number, line))
        elif block in SHELL_BLOCKS:
            start, text = pending or (number, "")
            text = f"{text} {line.strip()}".strip()
            if text.endswith("\\"):
                pending = (start, text[:-1])
            else:
                pending = None
                found.append(Command(f"{name}:{start}", text))
    found += [Command(f"{name}:{n}", text) for n, text in _inline_spans(prose)]
    return found


def entry_words(text: str) -> list[str] | None:
    """The command's words from the interpreter or `make` on, or None when it runs none of the
    project's entry points."""
    try:
        words = shlex.split(re.sub(r"^(\s*\w+=\S+\s+)+", "", text), comments=True)
    except ValueError:  # not a shell command (prose in backticks)
        return None
    if not words:
        return None
    words[0] = words[0].removeprefix(".venv/bin/")
    if words[0] == "python" and len(words) > 1:
        target = words[1]
        if target in APPS or re.fullmatch(r"(docs|benchmarks)/\w+\.py", target):
            return words
        if words[1:3] == ["-m", "pipeline.front"]:
            return words
    if words[:2] == ["make", "run"]:
        return words
    return None


def variants(text: str) -> list[str]:
    """The command with its placeholders filled: one string per combination of alternatives."""
    # shell variables (outside single quotes; inside them, ${oc.env:...} is Hydra's) -> 0
    parts = text.split("'")
    text = "'".join(re.sub(r"\$(\w+|\{\w+\})", "0", p) if i % 2 == 0 else p for i, p in enumerate(parts))
    # alternatives: <a|b> and an optional [a | b | c] (a word of its own)
    groups = []

    def hole(m: re.Match) -> str:
        groups.append([a.strip() for a in m.group(1).split("|")])
        return f"\0{len(groups) - 1}\0"
    text = re.sub(r"<([^<>]*\|[^<>]*)>", hole, text)
    text = re.sub(r"(?<!\S)\[([^\[\]]*\|[^\[\]]*)\](?!\S)", hole, text)
    text = re.sub(r"<[^<>|]+>", DUMMY_RUN_ID, text)  # <id>, <run id>, <sweep trial run id>
    out = []
    for choice in itertools.product(*groups):
        out.append(re.sub(r"\0(\d+)\0", lambda m: choice[int(m.group(1))], text))
    return out


def overrides_of(words: list[str]) -> list[str]:
    """The Hydra overrides of an app's words (flags and `...` dropped), each sweep at one value."""
    args, skip = [], 0
    for w in words:
        if skip:
            skip -= 1
        elif w in FLAGS:
            skip = FLAGS[w]
        elif w != "...":
            args.append(w)
    out = []
    for o in OverridesParser.create().parse_overrides(args):
        if not o.is_sweep_override():
            out.append(o.input_line)
            continue
        sweep = o.value()
        value = str(sweep.start) if isinstance(sweep, IntervalSweep) else next(iter(o.sweep_string_iterator()))
        out.append(f"{o.get_key_element()}={value}")
    return out


def defined_options(script: Path) -> set[str]:
    """The --options an argparse script defines (its source parsed, never run)."""
    options = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            options |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")}
    return options


def check(words: list[str]) -> None:
    """Compose the config a command's words ask for, or check the script and its options; raise on
    a mismatch."""
    if words[0] == "make":
        args = next((w.removeprefix("ARGS=") for w in words[2:] if w.startswith("ARGS=")), "")
        return check(["python", "sweep.py", "-m", *shlex.split(args)])
    if words[1] == "-m":
        config, args = "front", words[3:]
    elif words[1] in APPS:
        config, args = APPS[words[1]], words[2:]
    else:
        script = REPO / words[1]
        assert script.is_file(), f"{words[1]} does not exist"
        if words[1].startswith("benchmarks/"):
            named = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", " ".join(words[2:])))  # [--opt X] too
            missing = sorted(named - defined_options(script))
            assert not missing, f"{words[1]} defines no {', '.join(missing)}"
            return None
        if 'compose("evaluate"' not in script.read_text():
            return None  # takes paths, not overrides
        config, args = "evaluate", words[2:]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        compose(config, overrides_of(args), return_hydra_config=True)
    return None


COMMANDS = [c for readme in READMES for c in readme_commands(REPO / readme) if entry_words(c.text)]


def _ids(commands: list[Command]) -> list[str]:
    """README path:line, and ", 2nd" and so on for a second command on the same line."""
    seen: dict[str, int] = {}
    out = []
    for c in commands:
        seen[c.where] = seen.get(c.where, 0) + 1
        out.append(c.where if seen[c.where] == 1 else f"{c.where}, command {seen[c.where]}")
    return out


@pytest.mark.parametrize("command", COMMANDS, ids=_ids(COMMANDS))
def test_readme_command_composes(command):
    problems = []
    for text in variants(command.text):
        try:
            check(entry_words(text))
        except Exception as err:  # noqa: BLE001  (any mismatch, reported with the README line)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            problems.append(f"  {text}\n    {first}")
    if problems:
        pytest.fail(f"{command.where}: this README command does not match the code:\n" + "\n".join(problems),
                    pytrace=False)


def test_every_kind_of_readme_command_is_checked():
    """The reader finds each kind of command README shows (a broken reader cannot pass silently)."""
    kinds = {(w[1] if w[0] == "python" and w[1] != "-m" else " ".join(w[:3]) if w[0] == "python" else "make run")
             for w in map(entry_words, (c.text for c in COMMANDS))}
    kinds = {re.sub(r"^(docs|benchmarks)/.*", r"\1", k) for k in kinds}
    assert kinds >= {"train.py", "evaluate.py", "sweep.py", "python -m pipeline.front", "docs", "benchmarks",
                     "make run"}, kinds
    assert any(c.where.startswith("hydra_plugins/") for c in COMMANDS)
