"""The command-line vocabulary the scripts share: one spelling per concept, the old
spellings kept as aliases, and a help formatter that shows every default once.

=============== ================== =========================================
concept         flag               also accepted (older spellings)
=============== ================== =========================================
device          ``--device``       --
mixed precision ``--amp 0|1``      ``--amp`` (= 1), ``--no-amp``, ``--no_amp``
channels-last   ``--channels_last 0|1``  ``--channels_last``, ``--no-channels_last``, ...
output folder   ``--out_dir``      ``--out``, ``--output`` (where a script used them)
workers         ``--workers``      ``--num_workers``
progress bars   ``--no_progress``  --
tracebacks      ``--debug``        --
seed            ``--seed``         --
dataset preset  ``--dataset``      --
dataset root    ``--root_path``    --
list folder     ``--lists_dir``    --
labeled cases   ``--labelnum``     --
=============== ================== =========================================

Each concept has one ``add_*`` helper here: the flag, its type and its default in one
place, the help the script's own where it says where that script's default comes from.
:func:`add_run_switches` adds a script's device/amp/progress/debug switches in one call,
:func:`add_sliding_window` the inference options of ``test.py`` and ``predict.py``.

On/off switches are ``--x 0|1`` (:func:`add_switch`): a benchmark spec writes them as
``"amp": 0`` (``code/benchmark.py`` turns ``false`` into no flag at all), and the bare
``--x`` / ``--no-x`` / ``--no_x`` of argparse's ``BooleanOptionalAction`` still work.
Flags that only turn something on (``--debug``, ``--overwrite``, ``--no_progress``) stay
plain flags. ``code/train.py`` keeps ``--out_root`` + ``--exp`` (run folder
``<out_root>/<exp>``): ``--resume`` finds a run by its name, and the benchmark tables
match finished runs by their training command, so renaming the flag would orphan them.
"""
from __future__ import annotations

import argparse
import re
from typing import Any, Sequence

#: metavar of the on/off switches
SWITCH_METAVAR = "0|1"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_STATES_DEFAULT = re.compile(r"\bdefault:", re.IGNORECASE)


def switch(text: str) -> bool:
    """argparse type of the on/off switches: 1/0 (also true/false, yes/no, on/off)."""
    v = str(text).strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected 0 or 1, got '{text}'")


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return " ".join(_show(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps multi-line descriptions (module docstrings) as written and appends
    ``(default: X)`` to an option's help exactly when the help does not already state a
    default (``default:``; an option whose default is ``None`` states it in its help when
    it has one to state). Plain flags (``store_true`` ...) get none."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)

    _FLAG_ACTIONS = (argparse._StoreTrueAction, argparse._StoreFalseAction,
                     argparse._StoreConstAction, argparse._HelpAction,
                     argparse._VersionAction, argparse._CountAction)

    @classmethod
    def default_text(cls, action: argparse.Action) -> str | None:
        """The ``(default: X)`` this formatter appends to ``action``'s help, or None."""
        if (isinstance(action, cls._FLAG_ACTIONS) or not action.option_strings
                or action.default is None or action.default is argparse.SUPPRESS
                or action.required):
            return None
        if action.help is argparse.SUPPRESS:
            return None
        if action.help and _STATES_DEFAULT.search(action.help):
            return None
        return f"(default: {_show(action.default)})".replace("%", "%%")

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        extra = self.default_text(action)
        if extra:
            help_text = f"{help_text} {extra}" if help_text else extra
        return help_text

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and self.default_text(action):
            # argparse prints no help line at all for an option without help
            action = _with_help(action, self.default_text(action) or "")
        return super()._format_action(action)


def _with_help(action: argparse.Action, text: str) -> argparse.Action:
    import copy

    clone = copy.copy(action)
    clone.help = text
    return clone


def parser(description: str | None = None, **kwargs: Any) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the shared :class:`HelpFormatter`."""
    kwargs.setdefault("formatter_class", HelpFormatter)
    return argparse.ArgumentParser(description=description, **kwargs)


def add_switch(p: argparse._ActionsContainer, name: str, default: bool | None, help: str,
               *aliases: str, dest: str | None = None) -> argparse.Action:
    """An on/off switch ``--name 0|1``; the bare ``--name`` means 1 and the hidden
    ``--no-name`` / ``--no_name`` mean 0 (what ``BooleanOptionalAction`` accepted)."""
    flag = "--" + name
    dest = dest or name.replace("-", "_")
    action = p.add_argument(flag, *aliases, dest=dest, type=switch, nargs="?", const=True,
                            default=default, metavar=SWITCH_METAVAR, help=help)
    negatives = [f"--no-{name}", f"--no_{name}"]
    negatives += [f"--no-{a[2:]}" for a in aliases] + [f"--no_{a[2:]}" for a in aliases]
    p.add_argument(*dict.fromkeys(negatives), dest=dest, action="store_const", const=False,
                   default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return action


def add_device(p: argparse._ActionsContainer) -> argparse.Action:
    return p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N "
                          "(auto: cuda when available)")


def add_amp(p: argparse._ActionsContainer) -> argparse.Action:
    return add_switch(p, "amp", None, "CUDA mixed precision (default: 1 on CUDA)")


def add_out_dir(p: argparse._ActionsContainer, help: str, *aliases: str,
                **kwargs: Any) -> argparse.Action:
    """``--out_dir`` (``aliases``: the script's older spellings, e.g. ``--out``)."""
    kwargs.setdefault("metavar", "OUT_DIR")
    return p.add_argument("--out_dir", *aliases, help=help, **kwargs)


def add_workers(p: argparse._ActionsContainer, help: str, default: int = 1,
                dest: str = "workers") -> argparse.Action:
    return p.add_argument("--workers", "--num_workers", dest=dest, type=int, default=default,
                          metavar="N", help=help)


def add_progress(p: argparse._ActionsContainer) -> argparse.Action:
    return p.add_argument("--no_progress", action="store_true", help="no progress bar")


def add_debug(p: argparse._ActionsContainer) -> argparse.Action:
    return p.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def add_run_switches(p: argparse._ActionsContainer, *, device: bool = True, amp: bool = True,
                     progress: bool = True, debug: bool = True) -> None:
    """The run switches of a script, in this order: ``--device``, ``--amp``,
    ``--no_progress``, ``--debug`` (each unless turned off here, for a script without the
    concept: e.g. ``progress=False`` where nothing shows a progress bar)."""
    for wanted, add in ((device, add_device), (amp, add_amp), (progress, add_progress),
                        (debug, add_debug)):
        if wanted:
            add(p)


def add_dataset(p: argparse._ActionsContainer, help: str, default: str | None = None,
                **kwargs: Any) -> argparse.Action:
    """``--dataset``: a preset name of :data:`cogrnet.presets.PRESETS` (``kwargs``: e.g.
    ``choices``)."""
    return p.add_argument("--dataset", default=default, help=help, **kwargs)


def add_root_path(p: argparse._ActionsContainer, help: str, **kwargs: Any) -> argparse.Action:
    """``--root_path``, the dataset root (``kwargs``: e.g. ``required=True``)."""
    return p.add_argument("--root_path", default=None, help=help, **kwargs)


def add_lists_dir(p: argparse._ActionsContainer, help: str) -> argparse.Action:
    """``--lists_dir``, a folder of ``<split>.list`` files beside the root."""
    return p.add_argument("--lists_dir", default=None, help=help)


def add_labelnum(p: argparse._ActionsContainer, help: str) -> argparse.Action:
    """``--labelnum N``: the first N IDs of the split are the labeled ones."""
    return p.add_argument("--labelnum", type=int, default=None, help=help)


def add_sliding_window(p: argparse._ActionsContainer, stride_xy: str, stride_z: str,
                       overlap: str) -> None:
    """The sliding-window inference options (``--stride_xy``, ``--stride_z``,
    ``--overlap``, ``--mode``, ``--sw_batch_size``, ``--keep_largest``, formerly ``--nms``);
    the arguments are the
    script's help of the first three (where their defaults come from)."""
    p.add_argument("--stride_xy", type=int, default=None, help=stride_xy)
    p.add_argument("--stride_z", type=int, default=None, help=stride_z)
    p.add_argument("--overlap", type=float, default=None, help=overlap)
    p.add_argument("--mode", choices=("constant", "gaussian"), default="constant",
                   help="window weighting (constant = the paper's plain average)")
    p.add_argument("--sw_batch_size", type=int, default=4, help="windows per forward pass")
    add_switch(p, "keep_largest", True, "keep the largest connected component of the "
               "prediction (1) or every component (0)", "--nms", dest="keep_largest")


def option_strings(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every option string of ``p`` -> its action (how the tests and the benchmark spec
    checker read a parser)."""
    return {s: a for a in p._actions for s in a.option_strings}


def help_lines(p: argparse.ArgumentParser) -> dict[str, str]:
    """Each visible option's help as ``--help`` prints it, keyed by its first option string."""
    fmt = p._get_formatter()
    out = {}
    for a in p._actions:
        if a.option_strings and a.help is not argparse.SUPPRESS:
            out[a.option_strings[0]] = " ".join(fmt._format_action(a).split())
    return out


__all__: Sequence[str] = ("HelpFormatter", "SWITCH_METAVAR", "add_amp", "add_dataset",
                          "add_debug", "add_device", "add_labelnum", "add_lists_dir",
                          "add_out_dir", "add_progress", "add_root_path", "add_run_switches",
                          "add_sliding_window", "add_switch", "add_workers", "help_lines",
                          "option_strings", "parser", "switch")
