"""HttpRule path templates: parsing, a trie matcher with Envoy's precedence, and variable binding.

Grammar (google/api/http.proto):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

Matching follows grpc-httpjson-transcoding (Envoy's transcoder): literal segments win over `*`, which wins
over `**`; `**` matches zero or more segments and only literals may follow it; a trailing `:verb` is a
verb only when some template registers that verb; trailing slashes are ignored. Single-segment variables
are fully percent-decoded; multi-segment ones keep RFC 6570 reserved characters (`%2F` stays) encoded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

SINGLE = "*"
MULTI = "**"
ANY_METHOD = "*"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_RESERVED = frozenset(b"!#$&'()*+,/:;=?@[]")


class TemplateError(ValueError):
    """A path template does not follow the HttpRule grammar."""


class PathError(ValueError):
    """A request path cannot be decoded (bad percent-encoding or not UTF-8)."""


@dataclass(frozen=True)
class Variable:
    """A `{field.path=...}` variable covering template segments [start, end); a negative end counts from the path's end."""

    field_path: tuple[str, ...]
    start: int
    end: int

    def bind(self, parts: list[str]) -> str:
        """The decoded value this variable takes in a matched request path."""
        end = self.end if self.end >= 0 else len(parts) + self.end + 1
        multi = end - self.start > 1 or self.end < 0
        return "/".join(unescape(part, keep_reserved=multi) for part in parts[self.start : end])


@dataclass(frozen=True)
class PathTemplate:
    """A parsed template: segments are literals, `*` or `**`; variables refer to segment ranges."""

    segments: tuple[str, ...]
    variables: tuple[Variable, ...]
    verb: str
    text: str

    @classmethod
    def parse(cls, text: str) -> PathTemplate:
        return _Parser(text).template()

    @property
    def is_literal(self) -> bool:
        return not self.variables and SINGLE not in self.segments and MULTI not in self.segments


class _Parser:
    """Recursive descent over one template string."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.segments: list[str] = []
        self.variables: list[Variable] = []

    def fail(self, why: str) -> TemplateError:
        return TemplateError(f"path template {self.text!r}: {why} at offset {self.pos}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def template(self) -> PathTemplate:
        if not self.text.startswith("/"):
            raise self.fail("must start with '/'")
        self.pos = 1
        if self.text != "/":
            self.parse_segments(in_variable=False)
        verb = ""
        if self.peek() == ":":
            self.pos += 1
            verb = self.literal()
        if self.pos != len(self.text):
            raise self.fail(f"unexpected {self.peek()!r}")
        self.check_multi()
        return PathTemplate(tuple(self.segments), self.resolve_variables(), verb, self.text)

    def parse_segments(self, in_variable: bool) -> None:
        while True:
            self.segment(in_variable)
            if self.peek() != "/":
                return
            self.pos += 1

    def segment(self, in_variable: bool) -> None:
        if self.text.startswith(MULTI, self.pos):
            self.pos += 2
            self.segments.append(MULTI)
        elif self.peek() == "*":
            self.pos += 1
            self.segments.append(SINGLE)
        elif self.peek() == "{":
            if in_variable:
                raise self.fail("variables cannot nest")
            self.variable()
        else:
            self.segments.append(self.literal())

    def literal(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in "/{}:=*":
            self.pos += 1
        if start == self.pos:
            raise self.fail("empty segment")
        return self.text[start : self.pos]

    def variable(self) -> None:
        self.pos += 1
        names = [self.ident()]
        while self.peek() == ".":
            self.pos += 1
            names.append(self.ident())
        start = len(self.segments)
        if self.peek() == "=":
            self.pos += 1
            self.parse_segments(in_variable=True)
        else:
            self.segments.append(SINGLE)
        if self.peek() != "}":
            raise self.fail("expected '}'")
        self.pos += 1
        self.variables.append(Variable(tuple(names), start, len(self.segments)))

    def ident(self) -> str:
        match = _IDENT.match(self.text, self.pos)
        if not match:
            raise self.fail("expected a field name")
        self.pos = match.end()
        return match.group()

    def check_multi(self) -> None:
        if MULTI in self.segments:
            after = self.segments[self.segments.index(MULTI) + 1 :]
            if any(s in (SINGLE, MULTI) for s in after):
                raise self.fail("only literal segments may follow '**'")

    def resolve_variables(self) -> tuple[Variable, ...]:
        """Variables ending in or after `**` get an end relative to the request path's end."""
        if MULTI not in self.segments:
            return tuple(self.variables)
        multi_at = self.segments.index(MULTI)
        resolved = []
        for var in self.variables:
            if var.start > multi_at:
                raise TemplateError(f"path template {self.text!r}: a variable cannot follow '**'")
            if var.end > multi_at:
                var = Variable(var.field_path, var.start, var.end - len(self.segments) - 1)
            resolved.append(var)
        return tuple(resolved)


def unescape(part: str, keep_reserved: bool) -> str:
    """Percent-decodes a path segment; with `keep_reserved`, RFC 6570 reserved characters stay encoded."""
    if "%" not in part:
        return part
    raw = part.encode("utf-8")
    if keep_reserved:
        decoded = _ESCAPE.sub(lambda m: m.group() if int(m.group(1), 16) in _RESERVED else bytes([int(m.group(1), 16)]), raw)
    else:
        decoded = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise PathError(f"path segment {part!r} is not percent-encoded UTF-8") from None


@dataclass
class _Node(Generic[T]):
    """One trie level: literal children, `*`/`**` children and the targets registered here by (method, verb)."""

    children: dict[str, _Node[T]] = field(default_factory=dict)
    multi: bool = False
    targets: dict[tuple[str, str], T] = field(default_factory=dict)


@dataclass(frozen=True)
class Match(Generic[T]):
    """A found target with the request's path parts (for binding its variables)."""

    target: T
    parts: list[str]


class PathMatcher(Generic[T]):
    """Maps (HTTP method, path) to a registered target the way Envoy's transcoder does."""

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._verbs: set[str] = set()
        self._methods: set[str] = set()

    def register(self, method: str, template: PathTemplate, target: T) -> None:
        """Adds a target; the same (method, template) twice is an error (Envoy would make both unreachable)."""
        node = self._root
        for segment in template.segments:
            node = node.children.setdefault(segment, _Node())
            node.multi = node.multi or segment == MULTI
        key = (method, template.verb)
        if key in node.targets:
            raise TemplateError(f"{method} {template.text} is bound twice")
        node.targets[key] = target
        self._methods.add(method)
        if template.verb:
            self._verbs.add(template.verb)

    def split(self, path: str) -> tuple[list[str], str]:
        """Request path (no query) -> path parts and verb, as Envoy's ExtractRequestParts."""
        verb = ""
        colon = path.rfind(":")
        if colon > path.rfind("/") and path[colon + 1 :] in self._verbs:
            verb = path[colon + 1 :]
            path = path[:colon]
        parts = path[1:].split("/") if path else []
        while parts and not parts[-1]:
            parts.pop()
        return parts, verb

    def lookup(self, method: str, path: str) -> Match[T] | None:
        parts, verb = self.split(path)
        target = _lookup(self._root, parts, 0, (method, verb))
        if target is None and method != ANY_METHOD:
            target = _lookup(self._root, parts, 0, (ANY_METHOD, verb))
        return None if target is None else Match(target, parts)

    def allowed_methods(self, path: str) -> list[str]:
        """The HTTP methods bound to `path` (to tell 405 from 404)."""
        parts, verb = self.split(path)
        return sorted(m for m in self._methods if _lookup(self._root, parts, 0, (m, verb)) is not None)


def _lookup(node: _Node[T], parts: list[str], i: int, key: tuple[str, str]) -> T | None:
    if i == len(parts):
        found = node.targets.get(key)
        if found is None and MULTI in node.children:
            found = node.children[MULTI].targets.get(key)
        return found
    child = node.children.get(parts[i])
    if child is not None:
        found = _lookup(child, parts, i + 1, key)
        if found is not None:
            return found
    if node.multi:
        return _lookup(node, parts, i + 1, key)
    for wildcard in (SINGLE, MULTI):
        child = node.children.get(wildcard)
        if child is not None:
            found = _lookup(child, parts, i + 1, key)
            if found is not None:
                return found
    return None


def bind(variables: Iterable[Variable], parts: list[str]) -> list[tuple[tuple[str, ...], str]]:
    """(field path, decoded value) for each variable of a matched template."""
    return [(var.field_path, var.bind(parts)) for var in variables]
