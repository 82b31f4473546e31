"""Every Python snippet in README.md is an example the tests run: the whole text of a
file in examples/, or a marked section of one (``# --8<-- [start:NAME]`` ...
``# --8<-- [end:NAME]``, the markers the docs include them by), dedented."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SECTION = re.compile(r"^ *# --8<-- \[start:(\w+)\]\n(.*?)^ *# --8<-- \[end:\1\]$", re.S | re.M)


def python_snippets(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", markdown, re.S | re.M)


def example_texts() -> dict[str, str]:
    """Each example's whole text, and each of its marked sections (``FILE:NAME``)."""
    texts = {}
    for path in sorted(EXAMPLES.glob("*.py")):
        text = path.read_text()
        texts[path.name] = text
        for name, body in SECTION.findall(text):
            texts[f"{path.name}:{name}"] = textwrap.dedent(body).strip() + "\n"
    return texts


def source_of(snippet: str, texts: dict[str, str]) -> str | None:
    return next((name for name, text in texts.items() if text == snippet), None)


def test_the_readme_has_python_snippets() -> None:
    assert len(python_snippets((ROOT / "README.md").read_text())) >= 4


@pytest.mark.parametrize(
    "index", range(len(python_snippets((ROOT / "README.md").read_text()))), ids=str
)
def test_a_readme_snippet_is_an_example(index: int) -> None:
    snippet = python_snippets((ROOT / "README.md").read_text())[index]
    assert source_of(snippet, example_texts()), (
        f"README's Python snippet #{index + 1} is neither a file in examples/ nor a marked "
        f"section of one; copy it from there:\n{snippet}"
    )


def test_a_whole_file_snippet_compiles_without_top_level_await() -> None:
    texts = example_texts()
    for snippet in python_snippets((ROOT / "README.md").read_text()):
        name = source_of(snippet, texts)
        if name and ":" not in name:
            compile(snippet, name, "exec")  # top-level await is a SyntaxError


def test_a_changed_snippet_is_caught() -> None:
    texts = example_texts()
    whole = texts["calls.py"]
    assert source_of(whole, texts) == "calls.py"
    assert source_of(whole.replace("offer-sdp", "offer"), texts) is None
    assert source_of(texts["softphone_call.py:softphone"], texts) == "softphone_call.py:softphone"


def test_sections_are_found_dedented() -> None:
    text = "def f():\n    # --8<-- [start:x]\n    a = 1\n\n    b = 2\n    # --8<-- [end:x]\n"
    assert SECTION.findall(text) == [("x", "    a = 1\n\n    b = 2\n")]
