"""``medprompt-train``'s options: the argument parser, ``--config`` files, method options, and the
settings every training command resolves from them (classification in :mod:`.cli`, text-prompted
segmentation in :mod:`napari_medprompt.seg_adapters.cli`).

A value on the command line wins over the ``--config`` file's, which wins over the default. Method
options come from the config's ``method_options``, then the method's own flags (``--ratio 0.5``,
added to the parser by :func:`add_method_flags` once the method is known), then ``--opt NAME=VALUE``;
they are checked against the method's option schema by :func:`run_settings`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

#: options that go into :class:`~.loop.TrainConfig` as they are
TRAIN_KEYS = ("method", "backbone", "pretrained", "optimizer", "lr", "epochs", "batch_size", "weight_decay",
              "monitor", "patience", "device", "balanced_sampling", "amp")
#: the keys a ``--config`` file may have
CONFIG_KEYS = TRAIN_KEYS + ("data", "out", "store", "split", "val_split", "test_split", "val_data", "val_fraction",
                            "split_seed", "classes", "shots", "fraction", "fractions", "seed", "seeds",
                            "method_options")


def load_config(path: str | None) -> dict:
    """The ``--config`` file (YAML or JSON) as a dict ({} without one); ``SystemExit`` with a message
    when it cannot be read, is not a mapping, or has a key outside :data:`CONFIG_KEYS`."""
    if not path:
        return {}
    p = Path(path)
    try:
        text = p.read_text()
        if p.suffix in (".yaml", ".yml"):
            import yaml

            cfg = yaml.safe_load(text) or {}
        else:
            cfg = json.loads(text)
    except Exception as err:
        raise SystemExit(f"cannot read config {p}: {err}") from None
    if not isinstance(cfg, dict):
        raise SystemExit(f"config {p} must be a mapping of option names to values")
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise SystemExit(f"config {p}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(CONFIG_KEYS)}")
    return cfg


def parser_train() -> argparse.ArgumentParser:
    """The ``medprompt-train`` parser without the method's own flags (:func:`add_method_flags`)."""
    from napari_medprompt.classify.base import available_methods
    from napari_medprompt.train.task import MONITORS

    p = argparse.ArgumentParser(prog="medprompt-train", description="Train a few-shot adapter on a frozen backbone.")
    p.add_argument("--config", help="YAML/JSON file with defaults for these options")
    p.add_argument("--list-methods", action="store_true", help="list the methods, their defaults and options, then exit")
    p.add_argument("--data", help="class-folder root or MedMNIST-style .npz (the training pool)")
    p.add_argument("--split", default=None, help="split of a .npz to sample training images from (default: train)")
    p.add_argument("--val-split", default=None, help="split of the .npz for model selection (default: val when "
                   "present); 'none' for no validation")
    p.add_argument("--test-split", default=None, help="split of the .npz to evaluate on (default: test when present); 'none'")
    p.add_argument("--val-data", default=None, help="separate validation data (class folder or .npz)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="carve a grouped validation split of this fraction from the pool before sampling")
    p.add_argument("--split-seed", type=int, default=None, help="seed of the --val-fraction split (default 0; fixed across seeds)")
    p.add_argument("--classes", nargs="+", default=None, help="class names for a .npz (in label order)")
    from napari_medprompt.seg_adapters.registry import available_seg_methods

    p.add_argument("--method", choices=sorted({**available_methods(), **available_seg_methods()}), default=None,
                   help="vlsm-* / clipseg-decoder train a text-prompted segmenter (see napari_medprompt.seg_adapters.cli)")
    p.add_argument("--backbone", default=None, help="e.g. ViT-B-16, resnet50, hf-hub:..., test-vit-tiny")
    p.add_argument("--pretrained", default=None, help="tag, local weights file, or 'random'")
    p.add_argument("--shots", type=int, default=None, help="k images per class (sampled per seed)")
    p.add_argument("--fraction", type=float, nargs="+", default=None, help="fraction(s) of the training pool per class")
    p.add_argument("--opt", "--method-option", dest="opt", action="append", default=[], metavar="NAME=VALUE",
                   help="method option, checked against the method's schema (see --list-methods); repeatable")
    for k, t in (("lr", float), ("epochs", int), ("batch_size", int), ("weight_decay", float), ("patience", int)):
        p.add_argument("--" + k.replace("_", "-"), dest=k, type=t, default=None,
                       help="default: the method's own" if k != "patience" else None)
    p.add_argument("--optimizer", choices=("adamw", "adam", "sgd"), default=None)
    p.add_argument("--monitor", choices=MONITORS + ("dice", "iou"), default=None, help="validation metric for model selection "
                   "(default balanced_accuracy)")
    p.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds N)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="several seeds: report mean ± sd")
    p.add_argument("--device", default=None, help="auto (default), cuda, mps or cpu")
    p.add_argument("--out", default=None, help="output folder (checkpoints, metrics.json, summary.json)")
    p.add_argument("--store", default=None, help="model store folder: every run becomes a new version")
    p.add_argument("--list-versions", action="store_true", help="list the versions of --store, then exit")
    p.add_argument("--rebuild-index", action="store_true", help="rebuild the index of --store from its version folders, then exit")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from the resume state in its "
                   "output folder (written after every epoch); refused when that state is another recipe's")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def add_method_flags(parser: argparse.ArgumentParser, method: str) -> dict[str, str]:
    """``--<option>`` flags for ``method``'s option schema (values checked by the schema later);
    an option whose flag would clash with a general flag is reachable through ``--opt`` only.
    Returns {option name: argparse dest}."""
    from napari_medprompt.classify.base import available_methods

    from napari_medprompt.seg_adapters.registry import available_seg_methods

    info = available_methods().get(method) or available_seg_methods().get(method)
    taken = set(parser._option_string_actions)
    out = {}
    group = parser.add_argument_group(f"options of {method} (also --opt NAME=VALUE)")
    for o in getattr(info, "options", ()):
        flag = "--" + o.name.replace("_", "-")
        if flag in taken:
            continue
        dest = "methodopt_" + o.name
        kw = {"nargs": "+"} if o.type is list else {}
        group.add_argument(flag, dest=dest, default=None, metavar=o.name.upper(), help=o.describe(), **kw)
        out[o.name] = dest
    return out


def _parse_value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def train_config_values(args, cfg: dict) -> dict:
    """The :data:`TRAIN_KEYS` that the config file or the command line sets (the command line wins)."""
    merged = {k: cfg[k] for k in TRAIN_KEYS if k in cfg}
    merged.update({k: getattr(args, k) for k in TRAIN_KEYS if getattr(args, k, None) is not None})
    return merged


def method_options(args, cfg: dict, flags: dict[str, str]) -> dict:
    """The method options as given (not yet checked): the config's ``method_options``, then the
    method's own flags (``flags`` from :func:`add_method_flags`), then every ``--opt NAME=VALUE``
    (the value read as JSON when it is JSON, else as a string)."""
    options = dict(cfg.get("method_options") or {})
    options.update({name: getattr(args, dest) for name, dest in flags.items() if getattr(args, dest) is not None})
    for item in args.opt:
        key, eq, val = item.partition("=")
        if not eq:
            raise SystemExit(f"medprompt-train: --opt {item!r}: expected NAME=VALUE")
        options[key.strip()] = _parse_value(val)
    return options


@dataclass
class RunSettings:
    """What every training command needs, each from the command line, else the config file, else the
    default: the checked method ``options``, the ``data`` path, the ``out`` folder (default
    ``medprompt-run``), the model ``store`` folder, the ``seeds`` (``--seeds``, ``--seed``, the
    config's ``seeds`` or ``seed``, else [0]), the ``val_fraction`` and the ``val_data`` path."""

    options: dict
    data: str
    out: Path
    store: str | None
    seeds: list
    val_fraction: float | None
    val_data: str | None


def run_settings(args, cfg: dict, method: str, options: dict,
                 validate: Callable[[str, dict], dict]) -> RunSettings | None:
    """The :class:`RunSettings` of a run of ``method``, its ``options`` checked by ``validate``
    (``validate_method_options`` or ``validate_seg_options``). An option error is printed and gives
    None (the command exits with status 2); no ``--data`` (nor ``data`` in the config) is a
    ``SystemExit`` with a message."""
    try:
        options = validate(method, options)
    except (KeyError, ValueError) as err:
        print(f"medprompt-train: {err.args[0] if err.args else err}", file=sys.stderr)
        return None
    data_path = args.data or cfg.get("data")
    if not data_path:
        raise SystemExit("medprompt-train: --data (or 'data' in --config) is required")
    seeds = args.seeds or ([args.seed] if args.seed is not None else None) or cfg.get("seeds") or [cfg.get("seed", 0)]
    return RunSettings(options=options, data=data_path, out=Path(args.out or cfg.get("out") or "medprompt-run"),
                       store=args.store or cfg.get("store"), seeds=seeds,
                       val_fraction=args.val_fraction if args.val_fraction is not None else cfg.get("val_fraction"),
                       val_data=args.val_data or cfg.get("val_data"))
