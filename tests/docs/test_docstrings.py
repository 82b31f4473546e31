"""Every public class and function has a docstring, and so does every public method and
property of a public class of the SDK (its own or the one it overrides): the API
reference is made from them, and mkdocstrings leaves out what has none. The relay's and
the proxy's classes are checked, their methods not (their stores implement protocols
documented once)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator

import pytest

# parley and its public subpackages: what they export (``__all__``), or, for a module
# without one, the classes and functions it defines.
MODULES = [
    "parley",
    "parley.client",
    "parley.sync",
    "parley.proxy",
    "parley.relay",
    "parley.media",
    "parley.web",
    "parley.ice",
    "parley.errors",
    "parley.credentials",
    "parley.ids",
]


def public(module_name: str) -> Iterator[tuple[str, object]]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module_name
        ]
    for name in names:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            yield f"{module_name}.{name}", value


def own_docstring(obj: object) -> bool:
    """A docstring written for ``obj``, not one dataclasses made up from its fields."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    name = getattr(obj, "__name__", "")
    return bool(doc and doc.strip()) and not (
        inspect.isclass(obj) and str(doc).startswith(f"{name}(")
    )


CLASSES_ONLY = {"parley.relay", "parley.proxy"}


def undocumented(name: str, obj: object, *, methods: bool = True) -> Iterator[str]:
    if not own_docstring(obj):
        yield name
    if not (methods and inspect.isclass(obj)):
        return
    for attr, value in vars(obj).items():
        if attr.startswith("_"):
            continue
        function = value.fget if isinstance(value, property) else value
        function = getattr(function, "__func__", function)  # staticmethod, classmethod
        if inspect.isfunction(function) and not inspect.getdoc(getattr(obj, attr, function)):
            yield f"{name}.{attr}"


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    methods = module_name not in CLASSES_ONLY
    missing = [
        gap for name, obj in public(module_name) for gap in undocumented(name, obj, methods=methods)
    ]
    assert not missing, f"no docstring: {', '.join(missing)}"


def test_the_check_finds_a_missing_docstring() -> None:
    class Documented:
        """Has one."""

        def method(self) -> None:
            pass

    assert list(undocumented("Documented", Documented)) == ["Documented.method"]
