"""Load YAML keeping where every key and value came from (line and column), so errors can point at them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from merlin_mdm.errors import SpecError, SpecIssue

__all__ = ["Located", "MarkedDict", "MarkedList", "load_marked", "load_marked_text", "load_plain", "load_scalar"]

Located = tuple[int, int]  # (line, column), both 1-based


class MarkedDict(dict[str, Any]):
    """A mapping that remembers the position of itself, of each key and of each value."""

    mark: Located = (0, 0)
    key_marks: dict[str, Located]
    value_marks: dict[str, Located]

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.key_marks = {}
        self.value_marks = {}
        self.duplicates: list[tuple[str, Located]] = []  # keys written twice (YAML keeps the last silently)


class MarkedList(list[Any]):
    """A sequence that remembers the position of itself and of each item."""

    mark: Located = (0, 0)
    item_marks: list[Located]

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.item_marks = []


def _pos(node: yaml.Node) -> Located:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _duplicate_keys(node: yaml.MappingNode) -> list[tuple[str, Located]]:
    """Scalar keys given twice in one mapping; keys brought in by a ``<<`` merge may be overridden."""
    seen: set[str] = set()
    out = []
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        if key_node.value in seen:
            out.append((str(key_node.value), _pos(key_node)))
        seen.add(key_node.value)
    return out


# libyaml's parser (when PyYAML was built with it) keeps node positions and parses several times faster.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _TextTimesLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """SafeLoader that reads base-60 numbers (`10:00:00`) as the text they are, as every spec field means them."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        """YAML 1.1 reads `10:00:00` as the number 36000 (base 60); a spec means the text (a walltime)."""
        if isinstance(node.value, str) and ":" in node.value:
            return node.value
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> Any:
        """Base-60 floats (`1:30.5`) stay text too."""
        if isinstance(node.value, str) and ":" in node.value:
            return node.value
        return super().construct_yaml_float(node)


_TextTimesLoader.add_constructor("tag:yaml.org,2002:int", _TextTimesLoader.construct_yaml_int)
_TextTimesLoader.add_constructor("tag:yaml.org,2002:float", _TextTimesLoader.construct_yaml_float)


def load_plain(text: str) -> Any:
    """``text`` read as plain dicts and lists, scalars as the spec reads them (YAMLError when it is no YAML)."""
    return yaml.load(text, Loader=_TextTimesLoader)  # a SafeLoader subclass


class _MarkingLoader(_TextTimesLoader):
    """SafeLoader that builds MarkedDict/MarkedList (YAML anchors, aliases and ``<<`` merges keep working)."""

    def construct_marked_map(self, node: yaml.MappingNode) -> Any:
        data = MarkedDict()
        data.mark = _pos(node)
        data.key_marks = {}
        data.value_marks = {}
        yield data
        data.duplicates = _duplicate_keys(node)
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            key = str(key) if not isinstance(key, str) else key
            data[key] = self.construct_object(value_node, deep=True)
            data.key_marks[key] = _pos(key_node)
            data.value_marks[key] = _pos(value_node)

    def construct_marked_seq(self, node: yaml.SequenceNode) -> Any:
        data = MarkedList()
        data.mark = _pos(node)
        data.item_marks = [_pos(child) for child in node.value]
        yield data
        data.extend(self.construct_object(child, deep=True) for child in node.value)


_MarkingLoader.add_constructor("tag:yaml.org,2002:map", _MarkingLoader.construct_marked_map)
_MarkingLoader.add_constructor("tag:yaml.org,2002:seq", _MarkingLoader.construct_marked_seq)


def load_scalar(text: str) -> Any:
    """``text`` read as the spec reads a plain scalar when that is a number or a boolean (``4`` the number 4);
    ``text`` itself otherwise (``00:10:00``, a list, a mapping, nothing, no YAML at all)."""
    try:
        value = yaml.load(text, Loader=_MarkingLoader)  # a SafeLoader subclass
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (bool, int, float)) else text


def _line_col(text: str, position: int) -> Located:
    """The 1-based (line, column) of character ``position`` of ``text``."""
    line_start = text.rfind("\n", 0, position) + 1
    return text.count("\n", 0, position) + 1, position - line_start + 1


def _yaml_issue(exc: yaml.YAMLError, filename: str, text: str = "") -> SpecIssue:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        tab = "; indent with spaces (YAML refuses tabs there)" if "'\\t'" in str(exc.problem) else ""
        return SpecIssue(filename, line, col, "", f"YAML syntax error: {exc.problem or exc}{tab}")
    if isinstance(exc, yaml.reader.ReaderError):  # says `position 22` of the whole text: give its line and column
        line, col = _line_col(text, exc.position) if text else (0, 0)
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        return SpecIssue(filename, line, col, "", f"YAML error: the character #x{code:04x} (a control or special "
                         "character) may not appear in a YAML file; remove it (a spec is plain text)")
    return SpecIssue(filename, 0, 0, "", f"YAML error: {exc}")


def _python_parser_error(text: str) -> yaml.YAMLError | None:
    """The pure-Python parser's error for ``text``: its messages are clearer than libyaml's, and stable."""
    try:
        for _ in yaml.parse(text, Loader=yaml.SafeLoader):
            pass
    except yaml.YAMLError as exc:
        return exc
    return None


def load_marked_text(text: str, filename: str) -> MarkedDict:
    """Parse ``text`` into a MarkedDict; a YAML syntax error becomes a SpecError with its position."""
    try:
        data = yaml.load(text, Loader=_MarkingLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        if "nesting depth" in str(getattr(exc, "problem", "")):  # the Python parser has no such limit, and takes
            raise SpecError([_yaml_issue(exc, filename, text)]) from None  # minutes over 100,000 open brackets
        raise SpecError([_yaml_issue(_python_parser_error(text) or exc, filename, text)]) from None
    except RecursionError:  # the pure-Python loader, where libyaml is missing, nests by recursion
        raise SpecError([SpecIssue(filename, 0, 0, "", "YAML syntax error: exceeded maximum nesting depth")]) from None
    if data is None:
        raise SpecError([SpecIssue(filename, 1, 1, "", "the spec is empty; start from `merlin-mdm example hello`")])
    if not isinstance(data, MarkedDict):
        raise SpecError([SpecIssue(filename, 1, 1, "", "a spec must be a YAML mapping with `description` and `study`")])
    return data


def load_marked(path: Path) -> MarkedDict:
    """Read and parse the spec file at ``path``."""
    if path.exists() and not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file (a pipe or a device, such as /dev/stdin)"
        raise SpecError([SpecIssue(str(path), 0, 0, "", f"the spec is {what}: a spec is a file, whose folder is "
                                   "$(SPECROOT) and the base of a relative OUTPUT_PATH; save it to a file")])
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError([SpecIssue(str(path), 0, 0, "", "no such file")]) from None
    except OSError as exc:
        raise SpecError([SpecIssue(str(path), 0, 0, "", f"cannot read the spec: {exc}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([_not_utf8(path, data, exc)]) from None
    return load_marked_text(text, str(path))


def _not_utf8(path: Path, data: bytes, exc: UnicodeDecodeError) -> SpecIssue:
    """Where the first byte that is no UTF-8 is (line and column, as an editor counts them), and the remedy."""
    line_start = data.rfind(b"\n", 0, exc.start) + 1
    line = data.count(b"\n", 0, exc.start) + 1
    column = len(data[line_start:exc.start].decode("utf-8", "replace")) + 1
    return SpecIssue(str(path), line, column, "", f"cannot read the spec: byte 0x{data[exc.start]:02x} is not UTF-8 "
                     "text; save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)")
