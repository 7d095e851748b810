"""The architecture holds: no import cycle anywhere in the runtime and the stages.

``lint-imports`` (run by .ci/run) checks the layers; its ``acyclic_siblings`` contract cannot see
a cycle that crosses the two root packages (round 1 had one: workers → tasks → workers), so this
test looks for strongly connected modules in the whole import graph.
"""

from __future__ import annotations

import grimp


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Tarjan's algorithm: groups of modules that import each other, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph("workers", "tasks", exclude_type_checking_imports=True)
    # The package root's lazy `app` attribute imports the app module, which is the point.
    graph.remove_import(importer="workers", imported="workers.celery_app")
    assert strongly_connected(graph) == []


def test_the_runtime_never_imports_a_stage() -> None:
    graph = grimp.build_graph("workers", "tasks", exclude_type_checking_imports=True)
    runtime = [
        m
        for m in graph.modules
        if m.startswith("workers.")
        and not m.startswith(("workers.celery_app", "workers.cli", "workers.stages"))
    ]
    chains = [
        (m, t)
        for m in runtime
        for t in graph.find_upstream_modules(m)
        if t == "tasks" or t.startswith("tasks.")
    ]
    assert chains == []
