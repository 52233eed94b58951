"""What the command line promises (issue 9, defect 12): every argument of every subcommand
has a description; `size_after` is always in the JSON contract; README's options match what
each command accepts; a dry run never says it is fixing."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import pytest

from ckpt_guard import cli
from ckpt_guard.app import fix as fixing
from ckpt_guard.policy import load_text

ROOT = Path(__file__).resolve().parents[2]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_argument_of_every_subcommand_has_help():
    parser = cli._parser()
    subs = _subparsers(parser)
    assert set(subs) == set(cli.COMMANDS)
    missing = []
    for name, sp in {"": parser, **subs}.items():
        for action in sp._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {action.option_strings or action.dest}")
    assert missing == []


def test_readme_options_are_accepted_by_each_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("Options of `check`"):readme.index("Exit codes:")]
    subs = _subparsers(cli._parser())
    for command in ("check", "fix", "inspect"):
        options = {o for a in subs[command]._actions for o in a.option_strings}
        assert {"--policy", "--output", "--format"} <= options, command
    formats = {c: next(a.choices for a in subs[c]._actions if "--format" in a.option_strings)
               for c in ("check", "fix", "inspect")}
    assert set(formats["check"]) == set(formats["fix"]) == {"text", "json", "markdown", "sarif"}
    assert "for `inspect`, `text|json`" in section and set(formats["inspect"]) == {"text", "json"}
    for option in re.findall(r"`(--[a-z-]+)", section):
        owners = [c for c, sp in subs.items()
                  if any(option in a.option_strings for a in sp._actions)]
        assert owners, option


def test_size_after_is_always_in_the_json_report(tmp_path, cli_run):
    shutil.copy(ROOT / "examples" / "training" / "yolo-last.pt", tmp_path / "last.pt")
    p = cli_run("check", "--format", "json", "last.pt", cwd=tmp_path)
    f = json.loads(p.stdout)["files"][0]
    assert "size_after" in f and f["size_after"] is None
    (tmp_path / ".ckpt-guard.yml").write_text("version: 1\nrules:\n  optimizer-state: fix\n")
    dry = json.loads(cli_run("fix", "--dry-run", "--format", "json", "last.pt",
                             cwd=tmp_path).stdout)["files"][0]
    real = json.loads(cli_run("fix", "--format", "json", "last.pt", cwd=tmp_path).stdout)
    assert dry["size_after"] == real["files"][0]["size_after"] == (tmp_path / "last.pt").stat().st_size


@pytest.fixture
def cli_run():
    from tests.cli.conftest import run_cli

    return run_cli


@pytest.mark.parametrize("dry_run", [True, False])
def test_dry_run_progress_never_says_fixing(tmp_path, monkeypatch, capsys, dry_run):
    shutil.copy(ROOT / "examples" / "training" / "lightning-epoch3.ckpt", tmp_path / "e.ckpt")
    monkeypatch.setattr(fixing, "PROGRESS_MIN_BYTES", 0)  # show progress for a small file
    policy = load_text("version: 1\nrules:\n  optimizer-state: fix\n"
                       "  fp32-payload: {action: fix, max-bytes: 0}\n", "p.yml")
    report = fixing.run_fix([str(tmp_path / "e.ckpt")], policy, root=tmp_path,
                            dry_run=dry_run, progress=False)
    assert report.files[0].status == "fixed"
    err = capsys.readouterr().err
    assert "%" in err
    if dry_run:
        assert "fixing" not in err and "scanning (dry run)" in err
    else:
        assert "fixing" in err


def _shape(parser: argparse.ArgumentParser) -> list:
    """What a parser accepts and says: every action's options, destination, default,
    choices, nargs and help, its subcommands' recursively."""
    shape = [parser.prog, parser.usage, parser.description]
    for action in parser._actions:
        shape.append((type(action).__name__, action.option_strings, action.dest,
                       action.default, action.choices if not isinstance(
                           action, argparse._SubParsersAction) else None,
                       action.nargs, action.help, action.metavar))
        if isinstance(action, argparse._SubParsersAction):
            shape.append({n: _shape(sp) for n, sp in action.choices.items()})
    return shape


def test_the_invoked_commands_parser_is_the_full_parsers():
    """main() builds only the invoked command's arguments (a cold check's speed): that
    command's parser must be the one the full parser has."""
    full = _subparsers(cli._parser())
    for name in cli.COMMANDS:
        only = _subparsers(cli._parser(name))
        assert _shape(only[name]) == _shape(full[name]), name
        assert only[name].format_help() == full[name].format_help(), name


@pytest.mark.parametrize("columns", [None, "50", "132", "junk", "0"])
def test_help_is_as_wide_as_argparses(monkeypatch, columns):
    """The formatter sized without shutil wraps help where argparse's own does."""
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    parser = cli._parser()
    ours = parser.format_help()
    parser.formatter_class = argparse.HelpFormatter
    assert ours == parser.format_help()
    for name, sp in _subparsers(parser).items():
        ours = sp.format_help()
        sp.formatter_class = argparse.HelpFormatter
        assert ours == sp.format_help(), name
