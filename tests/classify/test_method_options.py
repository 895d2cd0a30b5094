"""Method registry: every method declares an option schema and training defaults; options are validated.

A typo is an error naming the valid options (it used to be stored in the checkpoint and silently
ignored); values are type- and range-checked; the constructor validates too; the classes' own
defaults agree with the schema; full-finetune protects pretrained features with a small encoder lr.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import torch

from napari_medprompt.classify.backbones.registry import create_backbone
from napari_medprompt.classify.base import (
    OptionSpec,
    available_methods,
    method_class,
    validate_method_options,
)

METHODS = sorted(available_methods())


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_backbone("test-vit-tiny")


def test_every_method_declares_options_and_training_defaults():
    assert set(METHODS) >= {"zero-shot", "linear-probe", "mask-guided-clip", "segprompt", "movl", "full-finetune"}
    for name, info in available_methods().items():
        d = info.defaults
        assert d.optimizer == "adamw" and d.lr > 0 and d.batch_size >= 1 and d.epochs >= 0 and d.weight_decay >= 0, name
        assert all(isinstance(o, OptionSpec) and o.help for o in info.options), name
        full = validate_method_options(name, {})
        assert full == info.default_options(), name
        for o in info.options:
            assert o.name in o.describe() and o.help in o.describe()
    assert available_methods()["zero-shot"].defaults.epochs == 0  # training-free
    assert available_methods()["tip-adapter"].defaults.epochs == 0


@pytest.mark.parametrize("name", METHODS)
def test_a_typo_is_an_error_listing_the_valid_options(name):
    info = available_methods()[name]
    with pytest.raises(ValueError) as e:
        validate_method_options(name, {"no_such_option": 1})
    msg = str(e.value)
    assert f"method {name!r} has no option 'no_such_option'" in msg
    assert msg.endswith("valid options: " + ", ".join(o.name for o in info.options))


@pytest.mark.parametrize("name", METHODS)
def test_out_of_range_and_wrong_type_values_are_errors(name):
    info = available_methods()[name]
    for o in info.options:
        if o.type in (int, float) and o.min is not None:
            with pytest.raises(ValueError, match=f"{name}.{o.name}: .* below the minimum"):
                validate_method_options(name, {o.name: o.min - 1})
        if o.type in (int, float) and o.max is not None:
            with pytest.raises(ValueError, match=f"{name}.{o.name}: .* above the maximum"):
                validate_method_options(name, {o.name: o.max + 1})
        if o.type in (int, float):
            with pytest.raises(ValueError, match=f"{name}.{o.name}: expected"):
                validate_method_options(name, {o.name: "lots"})
        if o.choices:
            with pytest.raises(ValueError, match="is not one of " + ", ".join(o.choices)):
                validate_method_options(name, {o.name: "bogus"})


def test_values_from_the_command_line_are_coerced_to_the_declared_type():
    got = validate_method_options("mask-guided-clip", {"colour": "0,1,0", "alpha": "0.25", "n_prompts": "2",
                                                       "bias_layers": 3.0, "templates": '["an x-ray of {}"]'})
    assert got["colour"] == [0.0, 1.0, 0.0] and got["alpha"] == 0.25 and got["n_prompts"] == 2
    assert got["bias_layers"] == 3 and got["templates"] == ["an x-ray of {}"]
    assert validate_method_options("visual-prompt", {"pad": None})["pad"] is None  # None = sized by the method
    with pytest.raises(ValueError, match="expected 3 values"):
        validate_method_options("mask-guided-clip", {"colour": [1.0, 0.0]})
    with pytest.raises(ValueError, match="None is not allowed"):
        validate_method_options("linear-probe", {"normalize": None})
    with pytest.raises(ValueError, match="expected int"):
        validate_method_options("segprompt", {"n_prompts": 2.5})
    with pytest.raises(KeyError, match="unknown method"):
        validate_method_options("no-such-method", {})


@pytest.mark.parametrize("name", METHODS)
def test_the_constructor_validates_and_its_defaults_match_the_schema(name, vit):
    info = available_methods()[name]
    cls = method_class(name)
    with pytest.raises(ValueError, match="valid options: "):
        cls(vit, ["a", "b"], no_such_option=1)
    params = inspect.signature(cls.__init__).parameters
    for o in info.options:  # the schema is the one source of defaults
        assert o.name in params, f"{name}: option {o.name} is not a constructor argument"
        default = params[o.name].default
        if isinstance(default, tuple):
            default = list(default)
        assert default == o.default, f"{name}.{o.name}: class default {default!r} != schema {o.default!r}"
    model = cls(vit, ["a", "b"])
    config = model.method_config()
    assert set(config) == {o.name for o in info.options}
    again = cls(vit, ["a", "b"], **config)  # what a checkpoint stores rebuilds the same method
    assert again.method_config() == config


def test_listing_methods_imports_no_torch():
    code = ("import sys; from napari_medprompt.classify.base import available_methods; "
            "assert len(available_methods()) > 5; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_full_finetune_defaults_keep_the_pretrained_encoder_lr_small(vit):
    info = available_methods()["full-finetune"]
    assert info.defaults.lr == 1e-3 and info.defaults.weight_decay == 0.1
    model = method_class("full-finetune")(vit, ["a", "b"])
    head, encoder = model.param_groups(info.defaults.lr)
    assert head["lr"] == 1e-3 and encoder["lr"] == 1e-5
    assert {id(p) for p in head["params"]} == {id(p) for p in model.fc.parameters()}
    assert sum(p.numel() for p in encoder["params"]) == sum(p.numel() for p in model.backbone.model.visual.parameters())
    assert method_class("full-finetune")(vit, ["a", "b"], backbone_lr=3e-5).param_groups(1e-3)[1]["lr"] == 3e-5
