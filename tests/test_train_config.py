"""TrainConfig from TOML files and dotted overrides, its validation, and the train CLI parser."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from robota.errors import SpecError, UnknownNameError
from robota.train_cli import build_train_config, register
from robota.train_config import config_to_toml, load_config

CONFIG = """\
dataset = "runs/dataset"
output = "runs/train"
steps = 500
lr = 1e-3

[policy]
type = "act"
dim_model = 64
"""


def _file(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "train.toml"
    path.write_text(text)
    return path


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    register(commands)
    return parser.parse_args(["train", *argv])


def test_file_and_overrides(tmp_path):
    config = load_config(_file(tmp_path), ["policy.dim_model=32", "steps=20", "ema_decay=0.99"])

    assert config.dataset == Path("runs/dataset")
    assert config.steps == 20
    assert config.lr == 1e-3
    assert config.ema_decay == 0.99
    assert config.policy == "act"
    assert config.policy_overrides == {"dim_model": 32}


def test_override_list_and_string_values(tmp_path):
    config = load_config(
        None,
        ["dataset=runs/d", "output=runs/o", "policy.image_channels=[8, 16]", "lr_scaling=sqrt"],
    )

    assert config.policy_overrides == {"image_channels": [8, 16]}
    assert config.lr_scaling == "sqrt"


def test_toml_round_trip(tmp_path):
    config = load_config(_file(tmp_path), ["ema_decay=0.9", "grad_accum_steps=2"])

    again = load_config(_file(tmp_path, config_to_toml(config)))

    assert again == config


def test_unknown_key_suggests_field(tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean 'steps'"):
        load_config(_file(tmp_path), ["step=5"])


def test_unknown_policy_field_suggests_name(tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean 'dim_model'"):
        load_config(_file(tmp_path), ["policy.dim_modle=5"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("steps", "is not KEY=VALUE"),
        ('steps="5"', "steps must be int, got str"),
        ("grad_accum_steps=0", "grad_accum_steps must be a positive integer"),
        ("ema_decay=1.5", "ema_decay must be in"),
        ("val_fraction=1.0", "val_fraction must be in"),
        ("mixed_precision=bf16", "needs a CUDA device"),
        ("trainer.steps=5", "only policy.FIELD keys"),
    ],
)
def test_rejects_invalid_override(tmp_path, override, message):
    with pytest.raises(SpecError, match=message):
        load_config(_file(tmp_path), [override])


def test_missing_file_named(tmp_path):
    with pytest.raises(SpecError, match="missing.toml not found"):
        load_config(tmp_path / "missing.toml")


def test_missing_output_named():
    with pytest.raises(SpecError, match="no 'output'"):
        load_config(None, ["dataset=runs/d"])


def test_cli_keeps_old_flags():
    args = _parse("--dataset", "d", "--output", "o", "--steps", "7", "--batch-size", "4", "--seed", "3", "--policy", "act")

    config = build_train_config(args)

    assert (config.dataset, config.output) == (Path("d"), Path("o"))
    assert (config.steps, config.batch_size, config.seed, config.policy) == (7, 4, 3, "act")
    assert config.resume is False


def test_cli_overrides_win_over_file_and_flags(tmp_path):
    args = _parse(
        "--config", str(_file(tmp_path)), "steps=11", "--steps", "9", "--resume", "ema_decay=0.9",
        "--eval-every", "5",
    )

    config = build_train_config(args)

    assert config.steps == 11
    assert config.resume is True
    assert config.eval_every == 5
    assert config.ema_decay == 0.9
    assert config.policy_overrides == {"dim_model": 64}


def test_register_replaces_train_subcommand():
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("train")
    register(commands)

    args = parser.parse_args(["train", "--dataset", "d", "--output", "o", "steps=3"])

    assert args.overrides == ["steps=3"]
    assert [action.dest for action in commands._choices_actions].count("train") == 1
