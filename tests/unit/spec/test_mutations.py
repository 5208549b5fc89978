"""Replacing any value of a valid spec by a value of another type gives a SpecError, never another exception."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from merlin_mdm.errors import SpecError
from merlin_mdm.spec import load_spec_text

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "merlin_mdm" / "examples").glob("*/*.yaml"))
REPLACEMENTS: tuple[Any, ...] = (None, "abc", -3, True, [1, [2]], {"x": {"y": 1}})

DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

Path_ = tuple[str | int, ...]


def _paths(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    items: Any = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


def _replaced(data: Any, path: Path_, value: Any) -> Any:
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_type_mutations_never_traceback(example: Path) -> None:
    data = yaml.safe_load(example.read_text(encoding="utf-8"))
    n_errors = 0
    for path in _paths(data):
        for value in REPLACEMENTS:
            text = yaml.dump(_replaced(data, path, value), Dumper=DUMPER)
            try:
                load_spec_text(text, example)
            except SpecError as exc:
                n_errors += 1
                assert exc.issues and all(issue.severity == "error" for issue in exc.issues)
    assert n_errors > 0
