"""The layers hold: no import cycle inside lrlab, and no attribute of lrlab that is both a module and a function."""

from __future__ import annotations

import importlib
import pkgutil
import types

import grimp

import lrlab


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a cycle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module) & modules:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def test_there_is_no_import_cycle_inside_lrlab() -> None:
    graph = grimp.build_graph("lrlab")  # lazy and type-only imports count: they are dependencies of design
    modules = {m for m in graph.modules if m.startswith("lrlab.")} - {"lrlab"}
    assert len(modules) > 40  # the graph saw the whole package
    assert _cycles(graph, modules) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "b", "c"):
        graph.add_module(module)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="c")
    graph.add_import(importer="c", imported="a")
    assert _cycles(graph, {"a", "b", "c"}) == [["a", "b", "c"]]


def test_no_attribute_of_lrlab_is_both_a_module_and_a_function() -> None:
    for info in pkgutil.walk_packages(lrlab.__path__, "lrlab."):
        if not info.name.startswith(("lrlab.tools", "lrlab.__main__")):  # scripts: importing them runs them
            importlib.import_module(info.name)
    for name in lrlab.__all__:
        assert not isinstance(getattr(lrlab, name), types.ModuleType), name
    assert isinstance(lrlab.run, types.ModuleType) and callable(lrlab.track)


def test_every_option_of_an_enum_group_has_its_implementation() -> None:
    from lrlab.core import engines
    from lrlab.core.config import EngineName, LossName, ModelName, ReaderName
    from lrlab.core.data import READERS
    from lrlab.core.losses import LOSSES
    from lrlab.core.models import MODELS

    assert set(MODELS) == {member.value for member in ModelName}
    assert set(LOSSES) == {member.value for member in LossName}
    assert set(READERS) == {member.value for member in ReaderName}
    assert all(callable(engines.load(member)) for member in EngineName)
