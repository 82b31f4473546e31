"""Pages written at build time (mkdocs-gen-files): the call state diagrams from the
transition table, and the CLI reference from the typer app."""

from __future__ import annotations

import inspect
import re
import typing

import mkdocs_gen_files
import typer
import typer.cli

from parley.cli import app
from parley.protocol.call import CallEvent, Role, state_diagram


def call_states() -> str:
    """One Mermaid diagram per role, drawn from ``parley.protocol.call.TRANSITIONS``."""
    parts = [
        "# Call state diagrams\n",
        "Drawn at build time from the transition table in `parley.protocol.call` "
        "(`state_diagram(role)`): an arrow is a legal transition, labelled with the event "
        "that makes it; any other event in a state raises `IllegalTransition` and leaves "
        "the state unchanged. See [Calls](calls.md) for what each event means.\n",
    ]
    for role in Role:
        parts.append(f"## {role.value.capitalize()}\n\n```mermaid\n{state_diagram(role)}```\n")
    parts.append("## The events\n\n| event | what happened |\n|---|---|")
    for event in typing.get_args(CallEvent):
        what = " ".join((inspect.getdoc(event) or "").split())
        parts.append(f"| `{event.__name__}` | {what.replace('``', '`')} |")
    return "\n".join(parts) + "\n"


def _escape(help_text: str) -> str:
    """Help texts say <stem> and [--port P]: keep them text, not HTML or links."""
    for char, entity in (("<", "&lt;"), (">", "&gt;"), ("[", "&#91;"), ("]", "&#93;")):
        help_text = help_text.replace(char, entity)
    return help_text


def cli_reference() -> str:
    """Every ``parley`` command with its usage, arguments and options (typer's docs)."""
    command = typer.main.get_command(app)
    text = typer.cli.get_docs_for_click(
        obj=command, ctx=typer.Context(command), name="parley", title="CLI reference"
    )
    lines, fenced = [], False
    for line in text.splitlines():
        fenced ^= line.startswith("```")
        match = re.match(r"(\* `[^`]*`: )(.*)", line)
        if match:
            lines.append(match.group(1) + _escape(match.group(2)))
        elif fenced or line.startswith(("#", "```")):
            lines.append(line)
        else:
            lines.append(_escape(line))
    intro = (
        "Generated at build time from the `parley` command itself. Errors are one line "
        "on stderr (`error: Kind: what`), exit code 1; a usage error is one line too, "
        "exit code 2.\n"
    )
    title, _, rest = "\n".join(lines).partition("\n")
    return f"{title}\n\n{intro}{rest}\n"


def write_pages() -> None:
    with mkdocs_gen_files.open("call-states.md", "w") as page:
        page.write(call_states())
    with mkdocs_gen_files.open("cli.md", "w") as page:
        page.write(cli_reference())


if __name__ == "<run_path>":  # how mkdocs-gen-files runs it; imported by the tests, nothing
    write_pages()
