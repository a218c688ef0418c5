"""The commands written in README.md and docs/*.md parse with today's scripts: every
``python code/...`` or ``python scripts/...`` line of a fenced code block is given to that
script's argument parser (nothing runs). A renamed or removed flag in a script fails here,
naming the document and the line."""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from conftest import REPO, load_script

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:nohup\s+)?python\s+((?:code|scripts)/\S+\.py)(.*)$")


def documented_commands(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line number, script, arguments)`` of every script command in the fenced code
    blocks of ``path`` (backslash continuations joined, comments dropped, ``$(...)``
    substitutions and ``<placeholders>`` kept as one word; usage templates, with ``...``
    or ``[--optional]`` parts, are left out)."""
    out, fenced, pending, start = [], False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip().startswith("```"):
            fenced, pending = not fenced, ""
            continue
        if not fenced:
            continue
        if not pending:
            start = number
        text = pending + " " + line.strip() if pending else line.strip()
        if text.endswith("\\"):
            pending = text[:-1]
            continue
        pending = ""
        text = re.sub(r"\$\([^)]*\)", "SUBST", text)
        text = re.sub(r"\s+#.*$", "", text).strip()
        match = COMMAND.match(text)
        if match and "..." not in text and "[--" not in text:
            out.append((start, match.group(1), shlex.split(match.group(2))))
    return out


def _parser(script: str):
    if script == "code/train.py":
        from cogrnet.training.config import build_parser

        return build_parser()
    module = load_script(REPO / script)
    if hasattr(module, "build_parser"):
        return module.build_parser()
    return None


CASES = [(doc, number, script, args) for doc in DOCS
         for number, script, args in documented_commands(doc)]


def test_the_docs_hold_commands_to_check():
    assert len(CASES) >= 30
    assert {script for _, _, script, _ in CASES} >= {"code/train.py", "code/test.py",
                                                     "code/benchmark.py", "code/utils/registration.py"}


@pytest.mark.parametrize("doc, number, script, args", CASES,
                         ids=[f"{c[0].name}:{c[1]}" for c in CASES])
def test_a_documented_command_parses(doc, number, script, args):
    assert (REPO / script).is_file(), f"{doc.name}:{number}: {script} does not exist"
    if script == "scripts/gpu_benchmark.py":
        load_script(REPO / script).parse_args(args)
        return
    parser = _parser(script)
    assert parser is not None, f"{script}: no build_parser() to check its documented commands"
    try:
        parser.parse_args(args)
    except (SystemExit, argparse.ArgumentError):
        pytest.fail(f"{doc.name}:{number}: python {script} {shlex.join(args)} does not parse")


#: the dataset roots the docs make with code/import_dataset.py or make_phantom.py
CUSTOM_ROOTS = ("data/my_root",)
#: scripts that take a dataset root and a --dataset preset
WITH_DATASET = ("code/train.py", "code/test.py", "code/utils/registration.py")


def test_a_command_on_a_custom_root_names_the_dataset():
    """A README command on one of the own-data roots says ``--dataset custom`` (without it
    the scripts would still find import.json, but a reader copying the command to another
    root would not)."""
    bare = [f"{doc.name}:{number}: python {script} {shlex.join(args)}"
            for doc, number, script, args in CASES
            if script in WITH_DATASET and any(a in CUSTOM_ROOTS for a in args)
            and "--dataset" not in args]
    assert not bare, "custom root without --dataset custom:\n" + "\n".join(bare)
    assert any(script == "code/test.py" and "data/my_root" in args
               for _, _, script, args in CASES)  # so the check above has something to do
