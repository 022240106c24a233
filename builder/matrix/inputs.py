"""Hostile input, read safely: the one error type for bad configuration (:class:`ConfigError`),
bounded reads, a strict YAML reader and a depth-checked JSON reader (pydantic's errors as one line
each are :mod:`builder.matrix.validation`'s). The grammars strings are checked against
are in :mod:`builder.matrix.grammar`. Messages never echo more than :data:`SHOWN` characters of a value.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

#: Largest config file read (bytes); larger ones are refused before parsing.
MAX_BYTES = 1 << 20
#: How much of an offending value a message shows.
SHOWN = 80
#: Deepest nesting of mappings and lists accepted in a YAML or JSON input (the parsers recurse).
MAX_DEPTH = 64
#: The longest error line printed (characters), whatever it holds.
MAX_LINE = 400
#: What would break a message line or a terminal: C0 and C1 control characters and the Unicode line
#: and paragraph separators (every character :meth:`str.splitlines` splits on is among them).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class ConfigError(Exception):
    """Input that cannot be used. ``lines`` holds one line per problem (file, key path, what was expected)."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def shown(value: object) -> str:
    """``repr(value)`` cut to :data:`SHOWN` characters (with ``…``), for messages."""
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN - 1] + "…"


#: Control characters a block of text (an error, a log tail) may not keep: all but tab and newline.
_BLOCK_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def text_block(text: str, limit: int) -> str:
    """``text`` kept as lines (tabs and newlines stay) with every other control character escaped
    as :func:`one_line` does (no terminal escape sequence survives), its last ``limit`` characters
    kept (the end of a log matters most). What a run report stores of an error or a log tail."""
    escaped = _escape(_BLOCK_UNPRINTABLE, text)
    return escaped if len(escaped) <= limit else "…" + escaped[-(limit - 1):]


def _escape(unprintable: re.Pattern, text: str) -> str:
    # Every match of unprintable written as Python writes it (a newline: the two characters \n).
    return unprintable.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def one_line(text: str) -> str:
    """``text`` made one bounded line for stderr: every character of :data:`_UNPRINTABLE` escaped
    as Python writes it (a newline becomes the two characters ``\\n``, NUL ``\\x00``), then cut
    to :data:`MAX_LINE` characters (with ``…``)."""
    escaped = _escape(_UNPRINTABLE, text)
    return escaped if len(escaped) <= MAX_LINE else escaped[:MAX_LINE - 1] + "…"


# --- YAML ------------------------------------------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (no billion-laughs expansion) and duplicate mapping keys."""

    def compose_node(self, parent, index):  # noqa: D401 - PyYAML hook
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(None, None, "aliases (*name) are not allowed", event.start_mark)
        self._depth = getattr(self, "_depth", 0) + 1  # the composer recurses once per level
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.MarkedYAMLError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                           self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.MarkedYAMLError(None, None, "a mapping key must be a plain value",
                                           key_node.start_mark) from None
            if duplicate:
                raise yaml.MarkedYAMLError(None, None, f"duplicate key {shown(key)}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def read_bounded(path: Path, limit: int, fname: str, refusal: str) -> bytes:
    """At most ``limit`` bytes of the file at ``path`` (one more is read, so ``/dev/zero`` ends).
    Raises ConfigError (one line, naming ``fname``, then ``refusal`` for a larger file) when it
    cannot be read or is larger."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise ConfigError([f"{fname}: cannot read: {exc.strerror or exc}"]) from None
    if len(data) > limit:
        raise ConfigError([f"{fname}: larger than {limit} bytes; {refusal}"])
    return data


def read_text(path: Path) -> str:
    """A config file's text: at most :data:`MAX_BYTES`, UTF-8, no NUL or other control characters
    (tab, newline and carriage return aside). Raises ConfigError (one line) otherwise."""
    name = Path(path).name
    data = read_bounded(path, MAX_BYTES, name, "refusing to parse it")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError([f"{name}: line {line}: not UTF-8 text"]) from None
    bad = CONTROL.search(text)
    if bad:
        line = text[:bad.start()].count("\n") + 1
        raise ConfigError([f"{name}: line {line}: control character {bad.group()!r} (NUL bytes and other control "
                          "characters are not allowed)"])
    return text


def load_yaml(path: Path):
    """Parse a YAML (or JSON, a subset) config strictly: :func:`read_text`, then PyYAML's safe
    loader with duplicate keys and aliases refused. Raises ConfigError with the position and the
    problem only (never the offending line, which may hold a credential)."""
    text = read_text(path)
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError([f"{Path(path).name}: {where}: malformed YAML: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{Path(path).name}: malformed YAML: {type(exc).__name__}"]) from None


# --- JSON ------------------------------------------------------------------------------------------

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # the unrolled loop: fast on long strings
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """The deepest nesting of objects and arrays in JSON ``text`` (brackets inside strings do not
    count), found without parsing, so it can be checked before :func:`json.loads` recurses."""
    depth = deepest = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub('""', text)):
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def load_json(text: str, fname: str, **kwargs):
    """``json.loads(text, **kwargs)`` after refusing nesting deeper than :data:`MAX_DEPTH`. Raises
    ConfigError (one line: position and problem) for malformed or too deep JSON; ValueError
    raised by a hook of ``kwargs`` becomes a line too."""
    if json_depth(text) > MAX_DEPTH:
        raise ConfigError([f"{fname}: nested deeper than {MAX_DEPTH} levels; refusing to parse it"])
    try:
        return json.loads(text, **kwargs)
    except json.JSONDecodeError as exc:
        raise ConfigError([f"{fname}: line {exc.lineno}: malformed JSON: {exc.msg}"]) from None
    except ValueError as exc:
        raise ConfigError([f"{fname}: malformed JSON: {exc}"]) from None
