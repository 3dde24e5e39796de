"""The protocol core is pure: no I/O, clocks, threads, or module-level randomness.

Every module under ``paxos/`` is parsed (not imported) and checked for
imports of I/O and concurrency modules and for any use of the ``random``
module other than the ``random.Random`` class. Determinism of the simulator
depends on this: all randomness flows from one seeded ``random.Random``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "paxos"

#: Top-level modules the core must not import (submodules included).
FORBIDDEN = frozenset(
    {
        "zmq",
        "socket",
        "os",
        "time",
        "threading",
        "asyncio",
        "subprocess",
        "multiprocessing",
        "selectors",
        "secrets",
        "uuid",
    }
)
#: The only names the core may take from ``random``.
RANDOM_ALLOWED = frozenset({"Random"})


def impurities(source: str, filename: str = "<source>") -> list[str]:
    """Every impure import or use of module-level ``random`` in ``source``."""
    tree = ast.parse(source, filename)
    problems: list[str] = []
    random_aliases: set[str] = set()

    def where(node: ast.AST) -> str:
        return f"{filename}:{getattr(node, 'lineno', '?')}"

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN:
                    problems.append(f"{where(node)}: import {alias.name}")
                elif alias.name == "random":
                    random_aliases.add(alias.asname or "random")
                elif top == "random":
                    problems.append(f"{where(node)}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top in FORBIDDEN:
                problems.append(f"{where(node)}: from {node.module} import ...")
            elif top == "random":
                for alias in node.names:
                    if node.module != "random" or alias.name not in RANDOM_ALLOWED:
                        problems.append(f"{where(node)}: from {node.module} import {alias.name}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            problems.append(f"{where(node)}: __import__(...)")

    if random_aliases:
        attribute_bases: set[int] = set()
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in random_aliases
            ):
                attribute_bases.add(id(node.value))
                if node.attr not in RANDOM_ALLOWED:
                    problems.append(f"{where(node)}: {node.value.id}.{node.attr}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Name)
                and node.id in random_aliases
                and id(node) not in attribute_bases
            ):
                problems.append(f"{where(node)}: the random module itself is used")
    return problems


def core_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_walk_sees_the_core() -> None:
    names = {p.relative_to(PACKAGE).as_posix() for p in core_modules()}
    assert {
        "types.py",
        "multi/replica.py",
        "sim/runner.py",
        "sim/network.py",
        "coord/commands.py",
        "coord/machine.py",
    } <= names


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_core_module_is_pure(path: Path) -> None:
    assert impurities(path.read_text(encoding="utf-8"), str(path)) == []


@pytest.mark.parametrize(
    "source",
    [
        "import os",
        "import os.path",
        "import time as clock",
        "from os import path",
        "from os.path import join",
        "import threading",
        "from asyncio import sleep",
        "import zmq",
        "import socket",
        "def f():\n    import time\n",
        "import random\nrandom.random()",
        "import random\nx = random.randint(1, 6)",
        "import random\nrandom.choice([1, 2])",
        "import random\nrandom.shuffle(xs)",
        "import random\nrandom.seed(4)",
        "import random as r\nr.random()",
        "import random\nf = random.uniform",
        "import random\nuse(random)",
        "from random import randint",
        "from random import Random, shuffle",
        "from random import *",
        "__import__('os')",
    ],
)
def test_impurities_are_found(source: str) -> None:
    assert impurities(source)


@pytest.mark.parametrize(
    "source",
    [
        "import random\nrng = random.Random(7)\nrng.random()",
        "import random\ndef f(rng: random.Random) -> None:\n    rng.shuffle(xs)",
        "from random import Random\nRandom(3).choice([1])",
        "import heapq, dataclasses, enum\nfrom collections import deque",
        "from paxos.types import Ballot\nfrom . import rules",
        "class T:\n    time = 3\n    def os(self) -> int:\n        return self.time",
    ],
)
def test_pure_code_passes(source: str) -> None:
    assert impurities(source) == []
