"""The verdict table's protocol (issue 27): ramps as in UA-MT's code, the lr step per stage,
self-training handed the last pre-training weights when nothing may be selected, the
two-slices-only labels (an ignore mask), a scored list that no spec may train or select on,
and the paired statistics of the comparisons."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import cogrnet.benchmark as benchmark
from conftest import CODE
from cogrnet.annotation.dpa import slices_mask
from cogrnet.errors import ConfigError
from cogrnet.evaluation.compare import case_differences, paired_difference, seed_gap
from cogrnet.methods.base import Stage
from cogrnet.methods.losses import ce_dice
from cogrnet.methods.mean_teacher import UAMT, MeanTeacher
from cogrnet.methods.ramps import sigmoid_rampup
from cogrnet.checkpoints import load_checkpoint
from cogrnet.training.config import parse_config
from cogrnet.training.trainer import Trainer, stage_lr
from cogrnet.train_config import TrainConfig

TINY = ["--dataset", "phantom", "--n_filters", "4", "--patch_size", "32", "32", "16",
        "--batch_size", "4", "--labeled_bs", "2", "--device", "cpu", "--no_progress",
        "--num_workers", "1", "--labelnum", "2"]


# ------------------------------------------------------------------------- ramps
@pytest.mark.parametrize("method", [MeanTeacher, UAMT])
@pytest.mark.parametrize("length", [2500, 6000])
def test_consistency_weight_ramps_over_the_whole_run(method, length):
    m = method(TrainConfig(method=method.name, max_iteration=length))
    w = m.consistency_weight
    assert w(0) == pytest.approx(0.1 * math.exp(-5))           # start: ~0.0007
    assert w(length // 2) == pytest.approx(0.1 * math.exp(-1.25))  # middle: 0.029
    assert w(length) == pytest.approx(0.1)                      # end: the full weight
    assert w(int(0.4 * length)) < 0.05  # the old 40% ramp had reached 0.1 here
    if length == 6000:  # UA-MT's code: sigmoid_rampup(iter // 150, 40), equal at its steps
        for it in (0, 1500, 3000, 4500, 6000):
            assert w(it) == pytest.approx(0.1 * sigmoid_rampup(it // 150, 40))


@pytest.mark.parametrize("rampup", [0.4, 1.0])
def test_uamt_threshold_ramps_over_the_whole_run_whatever_the_consistency_ramp(rampup):
    m = UAMT(TrainConfig(method="uamt", max_iteration=2500, consistency_rampup=rampup))
    ln2 = math.log(2)
    assert m.uncertainty_threshold(0, 2) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * ln2)
    assert m.uncertainty_threshold(1250, 2) == pytest.approx(
        (0.75 + 0.25 * math.exp(-1.25)) * ln2)
    assert m.uncertainty_threshold(2500, 2) == pytest.approx(ln2)


def test_default_ramp_is_the_whole_run():
    assert parse_config(["--method", "mt", "--root_path", "x"]).consistency_rampup == 1.0


# ------------------------------------------------------------------- lr per stage
def test_lr_step_counts_within_each_stage_with_its_own_step():
    cfg = TrainConfig(lr_step=1500, pre_lr_step=375)
    pre = Stage("pre", 500, unlabeled=False, teacher=False, lr_step=cfg.pre_lr_step)
    slf = Stage("self", 2000, unlabeled=True, teacher=True)
    assert stage_lr(cfg, pre, 374) == pytest.approx(0.01)
    assert stage_lr(cfg, pre, 375) == pytest.approx(0.001)
    assert stage_lr(cfg, slf, 1499) == pytest.approx(0.01)
    assert stage_lr(cfg, slf, 1500) == pytest.approx(0.001)
    default = TrainConfig()  # the reference: x0.1 every 2500 iterations of a stage
    assert stage_lr(default, slf, 1999) == pytest.approx(0.01)
    with pytest.raises(ConfigError, match="--pre_lr_step is for two-stage methods"):
        parse_config(["--method", "sup", "--root_path", "x", "--pre_lr_step", "10"])


# ----------------------------------------------------------------- the handover
class _Scripted:
    """A validator whose Dice only depends on how often it was called (rising or falling):
    with ``--handover last`` nothing the run writes may depend on it."""

    def __init__(self, falling: bool):
        self.calls, self.falling = 0, falling

    def __call__(self, model, trainer):
        self.calls += 1
        dice = 1.0 / self.calls if self.falling else 1.0 - 1.0 / (self.calls + 1)
        return {case: dice for case in trainer.split.val}


def _two_stage(root, out, exp, handover, falling):
    argv = ["--root_path", str(root), "--out_root", str(out), "--exp", exp, *TINY,
            "--label_source", "full", "--pre_max_iteration", "3", "--self_max_iteration", "2",
            "--val_interval", "1", "--handover", handover]
    Trainer(parse_config(argv), validator=_Scripted(falling)).run()
    return load_checkpoint(out / exp / "last.pth")["model"]


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_handover_last_selects_nothing_on_the_validation_list(phantom_root, tmp_path):
    rising = _two_stage(phantom_root, tmp_path, "lr", "last", falling=False)
    falling = _two_stage(phantom_root, tmp_path, "lf", "last", falling=True)
    assert _same(rising, falling)
    assert "goes on from the last weights of stage pre" in (tmp_path / "lf" / "log.txt").read_text()
    # the selecting handover does depend on the validation Dice (so the check above can fail)
    best_r = _two_stage(phantom_root, tmp_path, "br", "best", falling=False)
    best_f = _two_stage(phantom_root, tmp_path, "bf", "best", falling=True)
    assert _same(best_r, rising) and not _same(best_f, falling)


# ------------------------------------------------------------------ slices only
def test_slices_mask_marks_the_two_annotated_slices():
    m = slices_mask((4, 5, 6), (2, 1), (3, 2))
    assert m[:, :, 3].all() and m[:, 2, :].all()
    assert m.sum() == 4 * 5 + 4 * 6 - 4


def _labeled_grad(weight):
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, 8, requires_grad=True)
    target = torch.zeros(2, 8, 8, 8, dtype=torch.long)
    target[:, 2:6, 2:6, 4] = 1
    target[:, 2:6, 3, 2:6] = 1
    for form in ("pooled_squared", "per_sample_linear"):
        ce_dice(logits, target, weight, form).backward()
    return logits.grad


def test_voxels_off_the_two_slices_get_exactly_zero_gradient():
    mask = torch.from_numpy(slices_mask((8, 8, 8), (2, 1), (4, 3)).astype(np.float32))
    off = (mask == 0).expand(2, 2, 8, 8, 8)
    grad = _labeled_grad(mask.expand(2, 8, 8, 8))
    assert torch.count_nonzero(grad[off]) == 0
    assert torch.count_nonzero(grad[~off]) > 0
    # the mask dropped: the same voxels do get a gradient (the check above can fail)
    assert torch.count_nonzero(_labeled_grad(None)[off]) > 0


@pytest.mark.parametrize("method,extra", [
    ("sup", ["--max_iteration", "2"]),
    ("mt", ["--max_iteration", "2"]),
    ("cogrnet", ["--pre_max_iteration", "1", "--self_max_iteration", "1"]),
])
def test_methods_train_on_the_two_slices_only(phantom_root, phantom_coarse, tmp_path, method,
                                              extra, label_reads):
    from cogrnet.annotation.io import read_coarse_label

    argv = ["--root_path", str(phantom_root), "--out_root", str(tmp_path), "--exp", method,
            *TINY, "--method", method, "--label_source", "slices", "--coarse_dir",
            str(phantom_coarse), "--val_list", "none", *extra]
    t = Trainer(parse_config(argv))
    t.run()
    vol = t.labeled[0]
    coarse = read_coarse_label(phantom_coarse, vol.case_id)
    np.testing.assert_array_equal(vol.targets["label"], coarse.annotation)
    np.testing.assert_array_equal(vol.targets["weight"],
                                  slices_mask(coarse.shape, coarse.axes, coarse.indices))
    assert label_reads == []  # no dense label is read
    assert load_checkpoint(tmp_path / method / "last.pth")["config"]["label_source"] == "slices"


def test_slices_refuse_flags_that_need_the_propagated_labels():
    for extra, message in ((["--coarse_mode", "two_stream"], "two_stream"),
                           (["--confidence_weighting"], "drop --confidence_weighting")):
        with pytest.raises(ConfigError, match=message):
            parse_config(["--root_path", "x", "--label_source", "slices", *extra])


# --------------------------------------------------------- the scored list's isolation
def _spec(tmp_path, **changes):
    lists = tmp_path / "lists"
    lists.mkdir(exist_ok=True)
    ids = [f"c{i:02d}" for i in range(12)]
    (lists / "train.list").write_text("\n".join(ids) + "\n")
    (lists / "scored.list").write_text("\n".join(ids[-4:]) + "\n")
    spec = {"prefix": "b", "seeds": [1], "checkpoint": "last.pth",
            "common": {"dataset": "phantom", "root_path": str(tmp_path / "none"),
                       "lists_dir": str(lists), "labelnum": 2, "val_list": "scored"},
            "test": {"split": "scored"},
            "rows": [{"name": "sup", "args": {"method": "sup", "max_iteration": 1}},
                     {"name": "cog", "args": {"method": "cogrnet", "handover": "last",
                                              "pre_max_iteration": 1,
                                              "self_max_iteration": 1}}]}
    for key, value in changes.items():
        spec[key] = value
    return spec


def test_a_spec_that_never_touches_its_scored_list_is_accepted(tmp_path):
    spec = _spec(tmp_path)
    benchmark.check_isolation(spec, spec["rows"], "spec")
    verdict = json.loads((CODE.parent / "benchmarks" / "la_half_verdict.json").read_text())
    benchmark.check_isolation(verdict, verdict["rows"], "la_half_verdict.json")
    # without lists_dir the lists are where the scripts look: the dataset preset's (data/LA)
    del verdict["common"]["lists_dir"]
    benchmark.check_isolation(verdict, verdict["rows"], "la_half_verdict.json")
    assert benchmark.isolation_problem(verdict) is None


@pytest.mark.parametrize("change,message", [
    ({"common_val_list": "none"}, "trains on 4 of the 4 scored cases"),
    ({"checkpoint": "best.pth"}, "scores best.pth, chosen on its validation list"),
    ({"cog_handover": "best"}, "row cog: self-training would start from the pre-training"),
    ({"test_lists_dir": "elsewhere"}, "trains on 4 of the 4 scored cases"),
])
def test_a_spec_that_trains_or_selects_on_its_scored_list_is_refused(tmp_path, change,
                                                                     message):
    spec = _spec(tmp_path)
    for key, value in change.items():
        if key == "common_val_list":
            spec["common"]["val_list"] = value
        elif key == "cog_handover":
            spec["rows"][1]["args"]["handover"] = value
        elif key == "test_lists_dir":  # the scored list read from elsewhere: training IDs
            (tmp_path / value).mkdir()
            (tmp_path / value / "scored.list").write_text("c00\nc01\nc02\nc03\n")
            spec["test"]["lists_dir"] = str(tmp_path / value)
        else:
            spec[key] = value
    with pytest.raises(ConfigError, match=message):
        benchmark.check_isolation(spec, spec["rows"], "spec")
    if "checkpoint" not in change:
        return  # the command line once is enough
    # a row on coarse labels: the refusal comes before the registration would run
    spec["rows"][0]["args"]["label_source"] = "coarse"
    spec["registration"] = {"out_dir": str(tmp_path / "reg"), "args": {}}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    base = [sys.executable, str(CODE / "benchmark.py"), "--spec", str(path),
            "--out", str(tmp_path / "out"), "--model_dir", str(tmp_path / "m")]
    res = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert res.returncode != 0 and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "m").exists() and not (tmp_path / "out").exists()  # nothing ran
    # the table of such a spec's runs (made elsewhere) says so and judges nothing
    res = subprocess.run(base + ["--collect"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    table = (tmp_path / "out" / "results.md").read_text()
    assert "**Not a held-out table**: the spec: " in table and message in table


def test_a_table_not_held_out_judges_no_comparison(tmp_path):
    spec = _spec(tmp_path, comparisons=[{"a": "cog", "b": "sup", "target": 0.0}])
    runs = [{"seed": 1, "mean": {"dice": 0.8}, "case_dice": {"c08": 0.8, "c09": 0.7}}]
    results = [{"name": "sup", "method": "sup", "seeds": runs},
               {"name": "cog", "method": "cogrnet", "seeds": runs}]
    assert benchmark.compare_rows(spec, results)[0].verdict == "met"
    unjudged = benchmark.compare_rows(spec, results, judged=False)[0]
    assert unjudged.verdict == "no verdict (scored list not held out)"
    assert unjudged.shortfalls == []


# ------------------------------------------------------------------- statistics
@pytest.mark.parametrize("b,message", [
    ([{"x": 0.8, "y": 0.7}, {"x": 0.8, "y": 0.7, "z": 0.9}],
     "run 1 of row B did not score 1 case"),  # a seed without case z: not dropped unseen
    ([{"x": 0.8, "y": 0.7, "z": None}], r"case z has no Dice \(None\)"),
    ([{"x": 0.8, "y": 0.7, "z": float("nan")}], r"case z has no Dice \(nan\)"),
])
def test_a_comparison_refuses_runs_that_scored_other_cases_or_no_dice(b, message):
    a = [{"x": 0.9, "y": 0.8, "z": 0.1}]
    for compare in (paired_difference, case_differences):
        with pytest.raises(ValueError, match=message):
            compare(a, b)
    with pytest.raises(ValueError, match=message):
        seed_gap(a * len(b), b)


def test_a_standard_error_that_cannot_be_estimated_misses_its_target(tmp_path):
    """One seed per row: the seed part of the SE is unknown, so an SE target is not met."""
    spec = _spec(tmp_path, max_se=0.012, comparisons=[{"a": "cog", "b": "sup", "target": 0.0}])
    one = {"seed": 1, "mean": {"dice": 0.8}, "case_dice": {"c08": 0.9, "c09": 0.8}}
    results = [{"name": "sup", "method": "sup", "seeds": [dict(one, case_dice={"c08": 0.5,
                                                                            "c09": 0.5})]},
               {"name": "cog", "method": "cogrnet", "seeds": [one]}]
    first = benchmark.compare_rows(spec, results)[0]
    assert math.isnan(first.diff.se) and first.diff.mean == pytest.approx(0.35)
    assert first.verdict.startswith("missed (SE n/a > 0.012")


def test_paired_difference_by_hand():
    a = [{"x": 0.8, "y": 0.6, "z": 0.7}, {"x": 0.9, "y": 0.7, "z": 0.8}]
    b = [{"x": 0.7, "y": 0.6, "z": 0.5}]
    d = paired_difference(a, b)
    # seed means of A: x .85 y .65 z .75; differences .15 .05 .25
    assert d.cases == 3 and d.mean == pytest.approx(0.15)
    as_float32 = [{c: np.float32(v) for c, v in run.items()} for run in a]  # numpy numbers
    assert paired_difference(as_float32, b).mean == pytest.approx(0.15, abs=1e-6)
    assert case_differences(a, b) == pytest.approx({"x": 0.15, "y": 0.05, "z": 0.25})
    assert d.se_cases == pytest.approx(np.std([0.15, 0.05, 0.25], ddof=1) / math.sqrt(3))
    assert math.isnan(d.se_seeds)  # one seed of B: the seed part is unknown
    b2 = b + [{"x": 0.8, "y": 0.5, "z": 0.6}]
    d2 = paired_difference(a, b2)
    var_a = np.var([0.7, 0.8], ddof=1) / 2
    var_b = np.var([0.6, 0.63333333], ddof=1) / 2
    assert d2.se_seeds == pytest.approx(math.sqrt(var_a + var_b), rel=1e-6)
    assert d2.se == pytest.approx(math.hypot(d2.se_cases, d2.se_seeds))
    # seed means of A .7 and .8, of the second scoring .6 and .6667: gaps .1 and .1333
    gap, se, n = seed_gap(a, [{"x": 0.7, "y": 0.6, "z": 0.5}, {"x": 0.8, "y": 0.6, "z": 0.6}])
    assert n == 2 and gap == pytest.approx((0.1 + 0.1333333) / 2, rel=1e-6)
    assert se == pytest.approx(np.std([0.1, 0.1333333], ddof=1) / math.sqrt(2), rel=1e-5)


def test_table_leads_with_the_teacher_and_writes_the_comparisons(tmp_path):
    spec = _spec(tmp_path, headline="teacher", max_se=0.012, seeds=[1, 2],
                 comparisons=[{"a": "cog", "b": "sup", "target": 0.0},
                              {"a": "sup", "b": "cog", "target": None}])
    cases = ["c08", "c09", "c10", "c11"]

    def run(seed, base, teacher=None):
        r = {"seed": seed, "run_dir": str(tmp_path), "seconds": 60.0,
             "mean": {"dice": base, "jaccard": 0.5, "hd95": 1.0, "asd": 0.5},
             "case_dice": {c: base + 0.01 * k for k, c in enumerate(cases)},
             "train_command": "t", "test_command": "s", "val_curve": {"iterations": []}}
        if teacher is not None:
            r["mean_teacher"] = {"dice": teacher, "jaccard": 0.6, "hd95": 1.0, "asd": 0.5}
            r["case_dice_teacher"] = {c: teacher + 0.01 * k for k, c in enumerate(cases)}
        return r

    results = [{"name": "sup", "method": "sup", "seeds": [run(1, 0.70), run(2, 0.72)]},
               {"name": "cog", "method": "cogrnet",
                "seeds": [run(1, 0.60, 0.80), run(2, 0.62, 0.84)]}]
    benchmark.write_outputs(spec, results, tmp_path / "out", "cmd")
    table = (tmp_path / "out" / "results.md").read_text()
    cog = next(line for line in table.splitlines() if line.startswith("| cog |"))
    assert "| 0.8200 ± 0.0283 |" in cog  # the teacher is the headline (sample std, n - 1)
    assert "0.6100 ± 0.0141 | +0.2100 ± 0.0100" in cog  # student beside, and the gap
    assert "| cog − sup | 4 | 2 / 2 | +0.1100 |" in table
    assert "| sup − cog | 4 | 2 / 2 | -0.1100 |" in table and "- (secondary)" in table
    # D clears the margin, but the seeds alone give SE = sqrt(.0004 + .0001) = .022 > .012
    assert ("| 0.0224 | 0.0000 | 0.0224 | D ≥ +0.00, SE ≤ 0.012 | missed (SE 0.0224 > 0.012) |"
            in table)
    # the picture of the comparisons, from the same numbers as the table
    assert "![paired comparisons](comparisons.png)" in table
    assert (tmp_path / "out" / "comparisons.png").stat().st_size > 0
    first = benchmark.compare_rows(spec, results)[0]
    assert first.cases == pytest.approx({c: 0.11 for c in cases})
    assert first.verdict == "missed (SE 0.0224 > 0.012)"
    # D short of the margin too: both parts named; with max_se met: D's alone; then met
    both = dataclasses.replace(first, margin=0.2)
    assert both.verdict == "missed (D +0.1100 < +0.20; SE 0.0224 > 0.012)"
    assert dataclasses.replace(both, max_se=0.03).verdict == "missed (D +0.1100 < +0.20)"
    assert dataclasses.replace(first, max_se=None).verdict == "met"
    assert [part.split()[0] for part in both.shortfalls] == ["D", "SE"]
    # a seed run beyond the plan (99) stays out of the pre-registered comparison
    extra = [dict(results[0], seeds=results[0]["seeds"] + [run(99, 0.10)]), results[1]]
    again = benchmark.compare_rows(spec, extra)[0]
    assert again.diff == first.diff and again.verdict == first.verdict
    spec["seeds"] = [1, 2, 3]  # planned seeds not all run yet: no verdict
    benchmark.write_outputs(spec, results, tmp_path / "out", "cmd")
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| open (cog 2 of 3 seeds, sup 2 of 3 seeds) |" in table
    still_open = benchmark.compare_rows(spec, results)[0]  # SE above max_se, yet not judged
    assert still_open.verdict.startswith("open") and still_open.shortfalls == []
