"""Contracts shared by backbones and adapter methods, and the method registry.

A *backbone* wraps a frozen pretrained image encoder (open_clip ViT / ResNet, torchvision ResNet).
A *method* (zero-shot, linear-probe, clip-adapter, tip-adapter, vpt, visual-prompt, movl,
mask-guided-clip, segprompt, full-finetune) is an ``nn.Module`` built on a backbone; only its own
parameters train (except full-finetune). Methods register by name with an import path so listing
them imports no torch.

Each registry entry declares its **option schema** (:class:`OptionSpec`: name, type, default, range
or choices, one-line help) and its **training defaults** (:class:`TrainDefaults`). The GUI and the CLI
build their forms and flags from them; :func:`validate_method_options` checks a user's options
against the schema (an unknown name is an error naming the valid ones; values are coerced to the
declared type and range-checked). Constructing a method (``method_class(name)(backbone, classes,
**options)``) runs the same validation.

Tensor conventions: ``images`` are float (B, 3, S, S) already normalised with the backbone's mean/std
at its input size S; ``masks`` are float (B, 1, S, S) in [0, 1] aligned with the images.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from typing import Any

OPTION_TYPES = (bool, int, float, str, list, dict)


@dataclass(frozen=True)
class OptionSpec:
    """One option of a method.

    ``type`` is one of bool, int, float, str, list (``item_type`` gives the element type) or dict.
    A ``default`` of None means "decided by the method" (e.g. sized from the backbone) and None is
    then an accepted value. ``choices`` restricts str values; ``min``/``max`` bound numbers (inclusive)
    and, for lists, each element.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    item_type: type | None = None  # element type of a list option
    length: int | None = None  # exact length of a list option

    def __post_init__(self) -> None:
        if self.type not in OPTION_TYPES:
            raise TypeError(f"option {self.name!r}: type must be one of bool, int, float, str, list, dict")

    @property
    def type_name(self) -> str:
        if self.type is list and self.item_type is not None:
            return f"list[{self.item_type.__name__}]"
        return self.type.__name__

    def describe(self) -> str:
        """One line for --help / --list-methods: ``name (type, default ..., range/choices): help``."""
        bits = [self.type_name, f"default {self.default!r}"]
        if self.choices:
            bits.append("one of " + "|".join(map(str, self.choices)))
        if self.min is not None or self.max is not None:
            lo = "-inf" if self.min is None else f"{self.min:g}"
            hi = "inf" if self.max is None else f"{self.max:g}"
            bits.append(f"in [{lo}, {hi}]")
        return f"{self.name} ({', '.join(bits)}): {self.help}"


@dataclass(frozen=True)
class TrainDefaults:
    """A method's own training schedule, used where the caller does not set one.

    ``epochs`` 0 means the method is training-free (nothing is optimised)."""

    optimizer: str = "adamw"
    lr: float = 1e-3
    epochs: int = 20
    batch_size: int = 16
    weight_decay: float = 1e-4
    note: str = ""  # where the values come from


@dataclass(frozen=True)
class MethodInfo:
    name: str
    target: str  # "module:Class"
    description: str
    uses_masks: bool = False  # the method requires masks
    cached_features: bool = False  # trainable part sits after the frozen encoder: train on cached features
    needs_text: bool = False  # needs a backbone with a text tower (CLIP)
    options: tuple[OptionSpec, ...] = ()
    defaults: TrainDefaults = field(default_factory=TrainDefaults)

    def option(self, name: str) -> OptionSpec:
        for o in self.options:
            if o.name == name:
                return o
        raise KeyError(_unknown_option(self, name))

    def default_options(self) -> dict[str, Any]:
        return {o.name: _copy_default(o.default) for o in self.options}


_METHODS: dict[str, MethodInfo] = {}


def register_method(info: MethodInfo) -> None:
    names = [o.name for o in info.options]
    if len(set(names)) != len(names):
        raise ValueError(f"method {info.name!r} declares an option twice: {names}")
    _METHODS[info.name] = info


def available_methods() -> dict[str, MethodInfo]:
    _load_builtin()
    return dict(_METHODS)


def method_info(name: str) -> MethodInfo:
    _load_builtin()
    try:
        return _METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(sorted(_METHODS))}") from None


def method_class(name: str):
    info = method_info(name)
    module, _, attr = info.target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _unknown_option(info: MethodInfo, name: str) -> str:
    valid = ", ".join(o.name for o in info.options) or "(none)"
    return f"method {info.name!r} has no option {name!r}; valid options: {valid}"


def _copy_default(v):
    return list(v) if isinstance(v, (list, tuple)) else (dict(v) if isinstance(v, dict) else v)


def _coerce_scalar(spec: OptionSpec, t: type, value, where: str):
    bad = f"method option {where}: expected {t.__name__}, got {value!r}"
    if t is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(bad)
    if t is int:
        if isinstance(value, bool):
            raise ValueError(bad)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise ValueError(bad) from None
        raise ValueError(bad)
    if t is float:
        if isinstance(value, bool):
            raise ValueError(bad)
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value.strip())
            except ValueError:
                raise ValueError(bad) from None
        else:
            try:  # numpy / torch scalars
                out = float(value)
            except (TypeError, ValueError):
                raise ValueError(bad) from None
        if out != out:
            raise ValueError(f"method option {where}: NaN is not a valid value")
        return out
    if t is str:
        if not isinstance(value, str):
            raise ValueError(bad)
        return value
    raise ValueError(bad)


def _check_range(spec: OptionSpec, value, where: str):
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"method option {where}: {value!r} is not one of {', '.join(map(str, spec.choices))}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.min is not None and value < spec.min:
            raise ValueError(f"method option {where}: {value!r} is below the minimum {spec.min:g}")
        if spec.max is not None and value > spec.max:
            raise ValueError(f"method option {where}: {value!r} is above the maximum {spec.max:g}")


def coerce_option(info: MethodInfo, spec: OptionSpec, value):
    """``value`` checked against ``spec`` and converted to its type (strings such as CLI values parse)."""
    where = f"{info.name}.{spec.name}"
    if value is None:
        if spec.default is None:
            return None
        raise ValueError(f"method option {where}: None is not allowed (default {spec.default!r})")
    if spec.type is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                raise ValueError(f"method option {where}: expected a JSON object, got {value!r} ({e})") from None
        if not isinstance(value, dict):
            raise ValueError(f"method option {where}: expected a mapping, got {value!r}")
        return dict(value)
    if spec.type is list:
        if isinstance(value, str):
            s = value.strip()
            if s.startswith("["):
                try:
                    value = json.loads(s)
                except json.JSONDecodeError as e:
                    raise ValueError(f"method option {where}: expected a JSON list, got {value!r} ({e})") from None
            else:  # comma-separated, e.g. "1,0,0"; a str list with one element otherwise
                value = [p.strip() for p in s.split(",")] if spec.item_type in (int, float) else [s]
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or isinstance(value, dict):
            raise ValueError(f"method option {where}: expected a list, got {value!r}")
        items = list(value)
        if spec.length is not None and len(items) != spec.length:
            raise ValueError(f"method option {where}: expected {spec.length} values, got {len(items)} ({value!r})")
        if not items:
            raise ValueError(f"method option {where}: the list is empty")
        t = spec.item_type or str
        out = [_coerce_scalar(spec, t, v, where) for v in items]
        for v in out:
            _check_range(spec, v, where)
        return out
    out = _coerce_scalar(spec, spec.type, value, where)
    _check_range(spec, out, where)
    return out


def validate_method_options(method: str, options: dict | None) -> dict[str, Any]:
    """The full option dict of ``method``: defaults filled in, ``options`` checked and coerced.

    Raises ``ValueError`` for an unknown option name (naming the valid ones) or a bad value, and
    ``KeyError`` for an unknown method."""
    info = method_info(method)
    options = dict(options or {})
    for name in options:
        if not any(o.name == name for o in info.options):
            raise ValueError(_unknown_option(info, name))
    out = info.default_options()
    for name, value in options.items():
        out[name] = coerce_option(info, info.option(name), value)
    return out


_loaded = False


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        importlib.import_module("napari_medprompt.classify.methods")
