"""One command-line vocabulary across the scripts (cogrnet/cli.py): the canonical flag of
each concept in every script that has the concept, the older spellings still parsing to the
same value, and every default shown once in ``--help``. Parsers only, no subprocesses."""
from __future__ import annotations

import argparse

import pytest

from conftest import CODE, REPO, load_script
from cogrnet.cli import HelpFormatter, help_lines, option_strings, switch
from cogrnet.training.config import build_parser as train_parser

SCRIPTS = {
    "train": None, "test": "test.py", "predict": "predict.py", "preprocess": "preprocess.py",
    "import_dataset": "import_dataset.py", "make_phantom": "make_phantom.py",
    "export_nnunet": "export_nnunet.py",
    "benchmark": "benchmark.py", "registration": "utils/registration.py",
    "resample_dataset": "utils/resample_dataset.py",
    "intensity_stats": "utils/intensity_stats.py",
}


def parser_of(name: str) -> argparse.ArgumentParser:
    if SCRIPTS[name] is None:
        return train_parser()
    return load_script(CODE / SCRIPTS[name]).build_parser()


@pytest.fixture(scope="module")
def parsers() -> dict[str, argparse.ArgumentParser]:
    return {name: parser_of(name) for name in SCRIPTS}


#: concept -> (canonical flag, the scripts that have the concept)
CANONICAL = {
    "device": ("--device", {"train", "test", "predict"}),
    "amp": ("--amp", {"train", "test", "predict"}),
    "channels_last": ("--channels_last", {"train"}),
    "output folder": ("--out_dir", {"test", "predict", "preprocess", "import_dataset",
                                    "make_phantom", "benchmark", "registration",
                                    "resample_dataset", "export_nnunet"}),
    "workers": ("--workers", {"train", "preprocess", "registration"}),
    "progress": ("--no_progress", {"train", "test", "preprocess"}),
    "debug": ("--debug", set(SCRIPTS)),
    "seed": ("--seed", {"train", "make_phantom", "registration"}),
    "dataset": ("--dataset", {"train", "test", "predict", "preprocess", "registration"}),
    "root": ("--root_path", {"train", "test", "registration", "resample_dataset",
                             "intensity_stats", "export_nnunet"}),
    "lists": ("--lists_dir", {"train", "test", "preprocess", "registration",
                              "resample_dataset", "intensity_stats"}),
    "split": ("--split", {"test", "registration", "intensity_stats"}),
    "checkpoint": ("--checkpoint", {"test", "predict"}),
}


@pytest.mark.parametrize("concept", sorted(CANONICAL))
def test_canonical_flag_in_every_script_of_the_concept(parsers, concept):
    flag, scripts = CANONICAL[concept]
    for name in sorted(scripts):
        actions = option_strings(parsers[name])
        assert flag in actions, f"{name}: no {flag}"
        # the canonical spelling is the one --help and the usage line show first
        assert actions[flag].option_strings[0] == flag, (name, actions[flag].option_strings)


#: older spellings: (script, base arguments, old argv, canonical argv)
ALIASES = [
    ("train", [], ["--amp", "1"], ["--amp", "1"]),
    ("train", [], ["--amp"], ["--amp", "1"]),
    ("train", [], ["--no-amp"], ["--amp", "0"]),
    ("train", [], ["--no_amp"], ["--amp", "0"]),
    ("train", [], ["--channels_last", "0"], ["--channels_last", "0"]),
    ("train", [], ["--num_workers", "3"], ["--workers", "3"]),
    ("train", [], ["--pin_memory", "1"], ["--pin_memory", "1"]),
    ("test", ["--root_path", "r"], ["--amp"], ["--amp", "1"]),
    ("test", ["--root_path", "r"], ["--no-amp"], ["--amp", "0"]),
    ("test", ["--root_path", "r"], ["--nms", "0"], ["--no-nms"]),
    ("test", ["--root_path", "r"], ["--nms", "0"], ["--keep_largest", "0"]),
    ("predict", ["--checkpoint", "c", "--input", "i", "--out_dir", "o"], ["--nms"],
     ["--keep_largest", "1"]),
    ("predict", ["--checkpoint", "c", "--input", "i"], ["--output", "o", "--amp"],
     ["--out_dir", "o", "--amp", "1"]),
    ("predict", ["--checkpoint", "c", "--input", "i"], ["--output", "o", "--no-amp"],
     ["--out_dir", "o", "--amp", "0"]),
    ("make_phantom", [], ["--out", "d"], ["--out_dir", "d"]),
    ("benchmark", ["--spec", "s"], ["--out", "d"], ["--out_dir", "d"]),
    ("registration", ["--out_dir", "o"], ["--no-previews"], ["--previews", "0"]),
    ("registration", ["--out_dir", "o"], ["--previews"], ["--previews", "1"]),
    ("registration", ["--out_dir", "o"], ["--num_workers", "2"], ["--workers", "2"]),
    ("preprocess", ["--dataset", "kits", "--raw_dir", "r"], ["--num_workers", "2"],
     ["--workers", "2"]),
]


@pytest.mark.parametrize("script,base,old,new", ALIASES,
                         ids=[f"{s}:{' '.join(o)}" for s, _, o, _ in ALIASES])
def test_old_spellings_parse_to_the_same_value(parsers, script, base, old, new):
    p = parsers[script]
    assert vars(p.parse_args(base + old)) == vars(p.parse_args(base + new))


def test_benchmark_specs_flags_still_parse():
    """The benchmark specs' training flags (``"amp": 0`` -> ``--amp 0``, ``num_workers``)
    are passed as they are written; the recorded commands must keep parsing."""
    import json

    from cogrnet import benchmark as bench

    p = train_parser()
    for path in sorted((REPO / "benchmarks").rglob("*.json")):
        spec = json.loads(path.read_text())
        for row in spec["rows"]:
            _, train, _ = bench.row_commands(spec, row, 1, REPO / "model")
            p.parse_args(train[2:])


def test_switch_values():
    assert [switch(v) for v in ("1", "0", "true", "off", "yes", "no")] == [
        True, False, True, False, True, False]
    with pytest.raises(argparse.ArgumentTypeError):
        switch("2")


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_default_shown_once(parsers, name):
    p = parsers[name]
    assert p.formatter_class is HelpFormatter, f"{name}: not the shared help formatter"
    lines = help_lines(p)
    for flag, text in lines.items():
        assert text.lower().count("(default:") <= 1, f"{name} {flag}: {text}"
        assert text.lower().count("default:") <= 1, f"{name} {flag}: {text}"
    for a in p._actions:
        if not a.option_strings or a.help is argparse.SUPPRESS or a.required:
            continue
        if isinstance(a, (argparse._StoreTrueAction, argparse._StoreConstAction,
                          argparse._HelpAction)):
            continue
        if a.default is not None:  # a value default: shown by the formatter or the help
            assert "default:" in lines[a.option_strings[0]].lower(), \
                f"{name} {a.option_strings[0]}: default {a.default!r} not in its help"


def test_train_help_shows_the_named_defaults(parsers):
    lines = help_lines(parsers["train"])
    assert "(default: 0.01)" in lines["--base_lr"]
    assert "(default: 1337)" in lines["--seed"]
    assert "(default: cogrnet)" in lines["--method"]
    assert lines["--root_path"].count("the preset's") == 1
