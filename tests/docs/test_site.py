"""The pages written at build time come from the code: the state diagrams from the call
transition table, the CLI reference from the typer app. ``./run test`` builds the whole
site strictly; these check what the generated pages say."""

from __future__ import annotations

import importlib.util
import re
import typing
from pathlib import Path
from types import ModuleType

import typer
from typer.core import TyperGroup

from parley.cli import app
from parley.protocol.call import TRANSITIONS, CallEvent, Role

ROOT = Path(__file__).resolve().parents[2]


def gen_pages() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_pages", ROOT / "docs" / "gen_pages.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_state_diagrams_draw_every_transition_of_the_table() -> None:
    page: str = gen_pages().call_states()
    diagrams = re.findall(r"```mermaid\n(.*?)```", page, re.S)
    assert len(diagrams) == len(Role)
    for role, diagram in zip(Role, diagrams, strict=True):
        arrows = set(re.findall(r"^    (\w+) --> (\w+): (\w+)$", diagram, re.M))
        table = {
            (state.value, new.value, event.__name__)
            for state, moves in TRANSITIONS[role].items()
            for event, new in moves.items()
        }
        assert arrows == table
    for event in typing.get_args(CallEvent):
        assert f"| `{event.__name__}` |" in page


def commands(group: TyperGroup, prefix: str) -> list[str]:
    names = []
    for name, command in group.commands.items():
        names.append(f"{prefix} {name}")
        if isinstance(command, TyperGroup):
            names += commands(command, f"{prefix} {name}")
    return names


def test_the_cli_reference_has_every_command_and_option() -> None:
    page: str = gen_pages().cli_reference()
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    names = commands(group, "parley")
    assert len(names) > 10
    for name in names:
        assert f"`{name}`" in page, name
    assert "* `--registration" in page and "* `--tls-cert" in page
    assert "<stem>" not in page and "&lt;stem&gt;" in page  # help text, not an HTML tag
