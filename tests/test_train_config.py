"""The typed run configuration: one record resolved in one place, defaults declared once
(the command line's in ``TrainConfig``, each method's beside the method)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from cogrnet.cli import option_strings
from cogrnet.errors import ConfigError
from cogrnet.methods.base import MethodDefaults
from cogrnet.methods.mean_teacher import MeanTeacher
from cogrnet.methods.registry import METHODS
from cogrnet.train_config import DEFAULTS, TrainConfig, flag_fields
from cogrnet.training.config import build_parser, parse_config


def test_the_resolved_config_is_frozen_and_round_trips_through_json():
    cfg = parse_config(["--method", "mt", "--seed", "7"])
    assert isinstance(cfg, TrainConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 8
    record = json.loads(json.dumps(cfg.to_dict()))
    assert TrainConfig.from_dict(record) == cfg
    # a record written before a setting existed takes that setting's default
    del record["patch_source"]
    assert TrainConfig.from_dict(record).patch_source is None
    with pytest.raises(ConfigError, match=r"^run/config.json: unknown setting\(s\) bogus "):
        TrainConfig.from_dict({**record, "bogus": 1}, "run/config.json")


def test_argparse_defaults_are_the_dataclass_defaults():
    """Every train.py flag that names a TrainConfig field with a fixed default takes it from
    there: the two cannot drift apart."""
    args = vars(build_parser().parse_args([]))
    shared = {f.name for f in dataclasses.fields(TrainConfig)} & set(args)
    checked = [k for k in shared if args[k] is not None and
               not isinstance(getattr(DEFAULTS, k), type(None))]
    assert len(checked) >= 20
    for key in checked:
        want = getattr(DEFAULTS, key)
        got = list(args[key]) if isinstance(args[key], tuple) else args[key]
        assert got == want, key


def test_each_flag_is_written_once_in_its_field():
    """train.py's parser is made from the fields: each field's flag shows the field's help
    and choices and takes the field's default (None: the preset or the method fills it)."""
    actions = option_strings(build_parser())
    flags = flag_fields()
    assert len(flags) >= 40
    for ff in flags:
        action = actions[ff.option]
        assert action.help == ff.flag.help, ff.name
        if ff.flag.choices:
            assert tuple(action.choices) == tuple(ff.flag.choices), ff.name
        if ff.kind is not bool:
            want = None if ff.flag.filled else getattr(DEFAULTS, ff.name)
            got = list(action.default) if isinstance(action.default, tuple) else action.default
            assert got == want, ff.name
    # on by default: the flag turns the field off
    off = parse_config(["--no_augment", "--nondeterministic", "--no_pseudo_lcc"])
    assert not (off.augment or off.deterministic or off.pseudo_lcc)
    # an interval of 0 or less is every iteration
    cfg = parse_config(["--val_interval", "0", "--save_interval", "-5", "--image_interval", "3"])
    assert (cfg.val_interval, cfg.save_interval, cfg.image_interval) == (1, 1, 3)


@pytest.mark.parametrize("argv, message", [
    (["--lr_step", "0"], r"^--lr_step 0: must be at least 1$"),
    (["--pre_lr_step", "0"], r"^--pre_lr_step 0: must be at least 1$"),
    (["--patch_size", "20", "32", "32"], r"^--patch_size 20 32 32: each side must be a multiple "),
    (["--pre_max_iteration", "-1"], r"^--pre_max_iteration must be >= 0$"),
    (["--method", "mt", "--max_iteration", "-1"], r"^--max_iteration must be >= 0$"),
    # two problems: the given flag's own check comes before the preset-filled values'
    (["--lr_step", "0", "--patch_size", "20", "32", "32"], r"^--lr_step 0"),
    (["--method", "mt", "--pre_lr_step", "0"], r"^--pre_lr_step is for two-stage methods"),
])
def test_each_field_checks_its_own_value_in_one_pass(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(argv)


def test_method_defaults_come_from_the_method_class(monkeypatch):
    """The batch sizes and the LA schedule are the class's ``defaults``: changing them there
    changes what an unset flag resolves to (and nothing else holds a copy)."""
    assert parse_config(["--method", "mt"]).max_iteration == 6000
    monkeypatch.setattr(MeanTeacher, "defaults",
                        MethodDefaults(batch_size=6, labeled_bs=3, la_iterations={"max_iteration": 11}))
    cfg = parse_config(["--method", "mt"])
    assert (cfg.batch_size, cfg.labeled_bs, cfg.max_iteration) == (6, 3, 11)
    # the LA schedule is for LA only: other presets keep their own
    assert parse_config(["--method", "mt", "--dataset", "kits"]).max_iteration != 11
    assert {n for n, m in METHODS.items() if m.two_stage} == {"cogrnet", "bcp"}


@pytest.mark.parametrize("argv, message", [
    (["--method", "cogrnet", "--labeled_bs", "3", "--batch_size", "8"], "must be even"),
    (["--method", "mt", "--labeled_bs", "4", "--batch_size", "4"], "between 1 and --batch_size - 1"),
    (["--method", "sup", "--labeled_bs", "0"], "at least 1"),
])
def test_each_method_checks_its_own_batch(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(argv)


@pytest.mark.parametrize("method, argv, world, message", [
    ("mt", ["--batch_size", "6", "--labeled_bs", "3"], 2, "--labeled_bs 3 is not divisible by the 2"),
    ("cogrnet", [], 4, r"must be even per process \(1 \+ 1 with 4\)"),
    ("bcp", ["--student_forwards", "2"], 2, "DistributedDataParallel does not take"),
    ("cogrnet", ["--batch_size", "10", "--labeled_bs", "4"], 2, r"\(2 \+ 3 with 2\)"),
])
def test_each_method_checks_its_split_over_processes(method, argv, world, message):
    """The rules a method's batch must keep on every rank of a torchrun launch live beside
    the method (``check_world``), in one line each; a batch that splits passes."""
    from cogrnet.methods.registry import method_class

    cfg = parse_config(["--method", method, *argv])
    with pytest.raises(ConfigError, match=message) as err:
        method_class(method).check_world(cfg, world)
    assert "\n" not in str(err.value)
    method_class(method).check_world(parse_config(["--method", method]), 1)
    method_class("cogrnet").check_world(parse_config(["--method", "cogrnet"]), 2)  # 2+2 each


def test_method_rules_adjust_the_config():
    bcp = parse_config(["--method", "bcp"])
    assert (bcp.label_source, bcp.fa_ratio) == ("full", pytest.approx(2 / 3))
    assert parse_config(["--method", "bcp", "--coarse_dir", "x"]).label_source == "coarse"
    sup = parse_config(["--method", "sup", "--labeled_bs", "3"])
    assert (sup.batch_size, sup.labeled_bs) == (3, 3)


def test_the_copy_paste_candidates_reach_the_config_and_conflicts_are_one_line():
    cfg = parse_config(["--method", "bcp", "--dice", "per_sample_linear", "--student_forwards", "2"])
    assert (cfg.dice, cfg.student_forwards) == ("per_sample_linear", 2)
    assert (DEFAULTS.dice, DEFAULTS.student_forwards) == ("pooled_squared", 1)  # the reference
    with pytest.raises(ConfigError, match="--student_forwards 2 and --cuda_graphs student"):
        parse_config(["--student_forwards", "2", "--cuda_graphs", "student"])


def test_the_settings_a_resume_keeps_are_config_fields():
    """What ``--resume`` compares (every method's and each method's own settings) names
    fields of the config, each once."""
    from cogrnet.training.checkpoint import LENGTH_KEYS, RESUME_KEYS

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name, method in METHODS.items():
        keys = RESUME_KEYS + method.settings
        assert set(keys) <= fields and len(set(keys)) == len(keys), name
        assert not set(keys) & set(LENGTH_KEYS), name
