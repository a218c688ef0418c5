"""The scored list of a benchmark is held out: never trained on, never picking a
checkpoint (:func:`check_isolation`)."""
from __future__ import annotations

from typing import Any

from cogrnet.benchmark.commands import row_args, row_method, scoring_args
from cogrnet.errors import ConfigError, DataError
from cogrnet.presets import REPO_ROOT

def _repo_path(path: str | None) -> str | None:
    """A spec path as the row's commands see it (they run from the repository root)."""
    return None if path is None else str(REPO_ROOT / path)


def _list_places(args: dict[str, Any]) -> tuple[str, str | None]:
    """``(root, lists_dir)`` where a script given ``args`` looks for its list files: its
    ``root_path`` and ``lists_dir``, else its dataset preset's."""
    from cogrnet.inference.settings import inference_preset

    preset = inference_preset(None, args.get("dataset"), args.get("root_path"))
    root = args.get("root_path") or preset.root_path or "."
    lists = args.get("lists_dir") if args.get("lists_dir") is not None else preset.lists_dir
    return str(_repo_path(root)), _repo_path(lists)


def check_isolation(spec: dict[str, Any], rows: list[dict[str, Any]], where: str) -> None:
    """The scored list is never trained on and never picks a checkpoint: for each row, no
    scored ID is a training ID (the train list minus the row's validation list, labeled or
    not), and when the scored cases are (some of) the row's validation list, the table scores
    ``last.pth`` and a two-stage row hands over its last pre-training weights
    (``handover: last``). A one-line :class:`ConfigError` naming the spec and row otherwise."""
    from cogrnet.data.dataset import find_list, read_list
    from cogrnet.methods.registry import method_class
    from cogrnet.training.data import validation_ids

    for row in rows:
        args = row_args(spec, row)
        scoring = scoring_args(spec, args)  # the test command's list, where test.py finds it
        split = str(scoring.get("split", "test"))
        scored_root, scored_lists = _list_places(scoring)
        scored = set(read_list(find_list(scored_root, split, scored_lists)))
        root, lists = _list_places(args)
        train = read_list(find_list(root, "train", lists))
        val, _ = validation_ids(root, lists, str(args.get("val_list", "auto")), train)
        held_out = set(val)
        trained = [i for i in train if i not in held_out and i in scored]
        name = f"{where}: row {row['name']}"
        if trained:
            raise ConfigError(f"{name} trains on {len(trained)} of the {len(scored)} scored "
                              f"cases (list '{split}', e.g. {trained[0]}): a scored case must "
                              "lie outside the training IDs (make it the row's val_list)")
        if not scored & set(val):
            continue
        checkpoint = spec.get("checkpoint", "last.pth")
        if checkpoint != "last.pth":
            raise ConfigError(f"{name}: scores {checkpoint}, chosen on its validation list, "
                              f"which holds scored cases (list '{split}'); score last.pth")
        method = method_class(row_method(spec, row))
        if method.two_stage and args.get("handover", "best") != "last":
            raise ConfigError(f"{name}: self-training would start from the pre-training "
                              "checkpoint chosen on a validation list that holds scored cases "
                              f"(list '{split}'); give the row \"handover\": \"last\"")


def isolation_problem(spec: dict[str, Any]) -> str | None:
    """Why the spec's scored list is not held out from its rows (:func:`check_isolation`),
    or that this could not be checked (a list file missing); ``None`` when it is."""
    try:
        check_isolation(spec, spec["rows"], "the spec")
    except ConfigError as err:
        return str(err)
    except DataError as err:
        return f"whether its scored list is held out could not be checked: {err}"
    return None
