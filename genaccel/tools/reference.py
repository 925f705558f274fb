"""The command reference (docs/commands.md) rendered as Markdown from argparse parsers.

`render_reference(parser)` takes the top parser (`genaccel.cli.build_parser()`; this module does not
import the CLI, which sits above it) and renders its usage, description and options, then each
subcommand's. The output depends on nothing but the parsers: usage lines are wrapped at a fixed width,
whatever the terminal. argparse has no public way to list a parser's actions and subcommands, so this
reads `_actions` and the subparsers action's `choices`, as argparse's own formatters do.
"""

from __future__ import annotations

import argparse
import re

WIDTH = 100  # columns of the usage lines, fixed so that the output does not follow the terminal
HEADER = (
    "Generated from the command line's argparse parsers by `python docs/make_reference.py`; "
    "edit the parsers (`genaccel/cli.py`), not this file. CI checks that the two agree."
)
_NOT_SHOWN = (None, False, argparse.SUPPRESS)


def _formatter(parser: argparse.ArgumentParser) -> argparse.HelpFormatter:
    formatter = parser.formatter_class(prog=parser.prog, width=WIDTH)
    if hasattr(formatter, "_set_color"):  # Python 3.14+: never colour the reference
        formatter._set_color(False)
    return formatter


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = _formatter(parser)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _help(action: argparse.Action, prog: str) -> str:
    """The action's help with %(default)s and the like filled in, and its default added when the help
    does not state one."""
    text = action.help or ""
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    if params.get("choices") is not None:
        params["choices"] = ", ".join(str(c) for c in params["choices"])
    text = text % dict(params, prog=prog) if "%" in text else text
    default = action.default
    if "default" not in text and default not in _NOT_SHOWN and default != [] and action.nargs != 0:
        text = f"{text} (default: {default})"
    return " ".join(text.split())


def _invocation(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    if not action.option_strings:
        return action.metavar or action.dest
    flags = ", ".join(action.option_strings)
    if action.nargs == 0:
        return flags
    return f"{flags} {formatter._format_args(action, action.dest.upper())}"


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """One bullet per argument (help excepted), grouped as the parser groups them."""
    formatter = _formatter(parser)
    lines: list[str] = []
    for group in parser._action_groups:
        actions = [
            a
            for a in group._group_actions
            if a.help is not argparse.SUPPRESS and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
        ]
        if not actions:
            continue
        if group.title not in ("positional arguments", "options", "optional arguments"):
            lines += [
                "",
                f"{group.title[0].upper()}{group.title[1:]}"
                + (f": {group.description}." if group.description else ":"),
            ]
        lines.append("")
        lines += [f"- `{_invocation(a, formatter)}`: {_help(a, parser.prog)}" for a in actions]
    return lines


def _epilog(text: str) -> list[str]:
    match = re.match(r"(example[^:]*):\s*(.+)", text, re.S)
    if match:
        label, command = match.groups()
        return ["", f"{label[0].upper()}{label[1:]}:", "", "```", " ".join(command.split()), "```"]
    return ["", " ".join(text.split())]


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, in the order they were added."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # aliases point at the same parser
                    seen.add(id(sub))
                    found.append((name, helps.get(name, ""), sub))
    return found


def _section(parser: argparse.ArgumentParser, title: str, summary: str = "") -> list[str]:
    lines = [f"## {title}", ""]
    description = " ".join((parser.description or summary).split())
    if description and not parser.description:  # a one-line help stands in: make it a sentence
        description = f"{description[0].upper()}{description[1:]}."
    if description:
        lines += [description, ""]
    lines += ["```", _usage(parser), "```"]
    lines += _options(parser)
    if parser.epilog:
        lines += _epilog(parser.epilog)
    return lines + [""]


def render_reference(parser: argparse.ArgumentParser) -> str:
    """Markdown for `parser` and each of its subcommands: usage, description, options with their help
    and defaults. Every command also takes `-h`/`--help`, which is not listed."""
    subcommands = _subcommands(parser)
    lines = [f"# `{parser.prog}` command reference", "", HEADER, ""]
    if subcommands:
        lines += ["| command | what it does |", "|---|---|"]
        lines += [f"| [`{name}`](#{parser.prog}-{name}) | {help_} |" for name, help_, _ in subcommands]
        lines.append("")
    lines += _section(parser, parser.prog)
    for name, help_, sub in subcommands:
        lines += _section(sub, f"{parser.prog} {name}", help_)
    return "\n".join(lines).rstrip() + "\n"
