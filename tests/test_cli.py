"""The command line: every option of every command has a help line that states its default
(a flag or a required option needs none), and `explorer --version` prints the version."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import explorer
from explorer.cli import main, make_parser

FLAGS = (
    argparse._StoreTrueAction,
    argparse._StoreFalseAction,
    argparse._StoreConstAction,
    argparse._CountAction,
    argparse._HelpAction,
    argparse._VersionAction,
)


def commands() -> dict[str, argparse.ArgumentParser]:
    """`explorer` itself ("") and each of its commands, by name."""
    parser = make_parser()
    found = {"": parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def arguments() -> list[tuple[str, argparse.ArgumentParser, argparse.Action]]:
    """(command, its parser, argument) for every argument of every command but --help."""
    return [
        (name, parser, action)
        for name, parser in commands().items()
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
    ]


def expanded_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help line as `--help` prints it (%(default)s and the like filled in), on one line."""
    return " ".join(parser._get_formatter()._expand_help(action).split())


def label(item) -> str:
    name, _, action = item
    return f"{name or 'explorer'} {'/'.join(action.option_strings) or action.dest}"


def test_every_command_is_there():
    assert set(commands()) >= {"", "build", "finetune", "show", "layouts", "animate", "publish",
                               "demo"}  # fmt: skip


@pytest.mark.parametrize("item", arguments(), ids=label)
def test_every_option_has_help_stating_its_default(item):
    name, parser, action = item
    assert action.help and action.help != argparse.SUPPRESS, "no help line"
    text = expanded_help(parser, action)
    if not action.option_strings or action.required or isinstance(action, FLAGS):
        return  # a positional, a required option or a flag: no default to state
    assert "default" in text.lower(), f"the help does not state the default: {text!r}"
    default = action.default
    if isinstance(default, (int, float, str)) and not isinstance(default, bool):
        # a default written out by hand must be the one the parser uses
        assert str(default) in text, f"the help names another default than {default!r}: {text!r}"


@pytest.mark.parametrize("name", sorted(set(commands()) - {""}))
def test_help_of_every_command_prints(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"usage: explorer {name}")
    assert "example:" in printed


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"explorer {explorer.__version__}\n"
    # and so does the console script, as a user runs it
    result = subprocess.run(
        [sys.executable, "-m", "explorer", "--version"], capture_output=True, text=True
    )
    assert (result.returncode, result.stdout) == (0, f"explorer {explorer.__version__}\n")
