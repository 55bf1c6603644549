"""Dependency-graph algorithms over step ids: cycles, ancestors and a deterministic topological order."""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

__all__ = ["ancestors", "find_cycles", "topological_order"]


def find_cycles(order: Sequence[str], needs: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Every elementary cycle found by a depth-first walk, each as `[a, b, ..., a]`, reported once.

    `order` fixes the walk order so the report is deterministic; edges to unknown ids are ignored.
    """
    cycles: list[list[str]] = []
    seen_sets: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in needs.get(node, ()):
            if dep not in needs:
                continue
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                key = frozenset(cycle)
                if key not in seen_sets:
                    seen_sets.add(key)
                    cycles.append(cycle)
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in order:
        if node not in state:
            visit(node)
    return cycles


def ancestors(node: str, needs: Mapping[str, Sequence[str]]) -> set[str]:
    """Every step `node` transitively needs (not including itself unless it is on a cycle)."""
    found: set[str] = set()
    pending = list(needs.get(node, ()))
    while pending:
        current = pending.pop()
        if current in found or current not in needs:
            continue
        found.add(current)
        pending.extend(needs[current])
    return found


def topological_order(order: Sequence[str], needs: Mapping[str, Sequence[str]]) -> list[str]:
    """Kahn's algorithm; among ready steps the one earliest in `order` goes first.

    Raises ValueError when the graph has a cycle.
    """
    index = {node: i for i, node in enumerate(order)}
    remaining = {node: len(set(needs.get(node, ()))) for node in order}
    dependents: dict[str, list[str]] = {node: [] for node in order}
    for node in order:
        for dep in set(needs.get(node, ())):
            dependents[dep].append(node)
    ready = [index[node] for node in order if remaining[node] == 0]
    heapq.heapify(ready)
    result: list[str] = []
    while ready:
        node = order[heapq.heappop(ready)]
        result.append(node)
        for child in dependents[node]:
            remaining[child] -= 1
            if remaining[child] == 0:
                heapq.heappush(ready, index[child])
    if len(result) != len(order):
        raise ValueError("the dependency graph has a cycle")
    return result
