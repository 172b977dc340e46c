"""Both command lines follow one set of conventions: every option explained with its default, one name per
concept, --version, shell completion, and a deprecated spelling that still works."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloud.cli import build_parser as cloud_parser
from device_runtime.cli import build_parser as device_parser

REPO = Path(__file__).resolve().parents[2]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser):
    return [
        a
        for a in parser._actions
        if a.option_strings
        and a.help != argparse.SUPPRESS
        and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))
    ]


@pytest.mark.parametrize("name,parser", [("dir-cloud", cloud_parser()), ("dir-device", device_parser())])
def test_every_option_has_help_and_shows_its_default(name, parser):
    missing = []
    for command, sub in _subcommands(parser).items():
        text = sub.format_help()
        formatter = sub._get_formatter()
        for action in _options(sub):
            flag = f"{name} {command} {action.option_strings[0]}"
            if not action.help:
                missing.append(f"{flag}: no help")
            elif action.nargs != 0 and not action.required:
                shown = formatter._get_help_string(action) % {"default": action.default}
                if "default" not in shown.lower():
                    missing.append(f"{flag}: default not shown")
            assert action.option_strings[0] in text
    assert not missing, "\n".join(missing)


def test_one_flag_name_per_concept():
    """No subcommand of either CLI spells a concept another one spells differently."""
    synonyms = {
        "--torch-threads": "--threads",
        "--num-threads": "--threads",
        "--output": "--out",
        "--seed-count": "--seeds",
        "--overwrite": "--force",
        "--run-dir": "--run",
        "--data-dir": "--data",
    }
    for parser in (cloud_parser(), device_parser()):
        for command, sub in _subcommands(parser).items():
            for action in _options(sub):
                for flag in action.option_strings:
                    assert flag not in synonyms, f"{command} {flag}: call it {synonyms[flag]}"


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("module,prog", [("cloud.cli", "dir-cloud"), ("device_runtime.cli", "dir-device")])
def test_version_and_bash_completion(module, prog):
    version = _cli(module, "--version")
    assert version.returncode == 0 and version.stdout.startswith(prog + " ") and version.stdout.split()[1][0].isdigit()
    completion = _cli(module, "completion", "bash")
    assert completion.returncode == 0, completion.stderr
    assert "complete" in completion.stdout and "--help" in completion.stdout


def test_cloud_completion_knows_every_subcommand_and_its_flags():
    script = _cli("cloud.cli", "completion", "bash").stdout
    for command in _subcommands(cloud_parser()):
        assert command in script
    assert "--tensorboard" in script and "--max-vector-ids" in script


def test_deprecated_spelling_still_parses_and_warns(capsys):
    args = cloud_parser().parse_args(["serve", "--run", "r", "--bundles", "b", "--torch-threads", "3"])
    assert args.threads == 3
    assert "--torch-threads is deprecated; use --threads" in capsys.readouterr().err
    assert "--torch-threads" not in _subcommands(cloud_parser())["serve"].format_help()
    assert cloud_parser().parse_args(["serve", "--run", "r", "--bundles", "b"]).threads == 1


def test_help_texts_match_the_synthetic_defaults():
    from cloud.data.synth import SynthConfig

    text = _subcommands(cloud_parser())["synth"].format_help()
    assert f"{SynthConfig().users:,} users" in " ".join(text.split())


def test_train_help_shows_train_config_defaults():
    from cloud.commands.train import DEFAULTS
    from cloud.training.config import TrainConfig

    defaults = TrainConfig()
    assert {k: getattr(defaults, k) for k in DEFAULTS} == DEFAULTS


def test_prepare_json_is_for_scripts(tiny_logs, tmp_path, capsys):
    import json

    from cloud.cli import main

    assert main(["prepare", "--logs", str(tiny_logs), "--out", str(tmp_path / "data"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["out"] == str(tmp_path / "data") and stats["lists"] == {"train": 6, "valid": 2, "test": 2}
