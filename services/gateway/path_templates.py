"""`google.api.http` path templates: parsing and matching request paths.

Grammar (google/api/http.proto):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

`{var}` is `{var=*}`; `**` matches the rest of the path and comes last. A
variable captures its segments including literals (`{name=invoices/*}`
binds `invoices/123`). Values are percent-decoded, except that a
multi-segment variable keeps `%2F` encoded, as Envoy and grpc-gateway do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ENCODED_SLASH = re.compile("%2F", re.IGNORECASE)
WILDCARD, REST = "*", "**"


class TemplateError(ValueError):
    """A path template that breaks the grammar."""


@dataclass(frozen=True)
class Variable:
    field_path: str
    start: int  # index of its first segment
    end: int  # one past its last segment; -1 when it ends in `**`


@dataclass(frozen=True)
class PathTemplate:
    text: str
    segments: tuple[str, ...]  # literals, `*` and `**`
    variables: tuple[Variable, ...]
    verb: str

    @property
    def literal_count(self) -> int:
        return sum(1 for s in self.segments if s not in (WILDCARD, REST))

    def match(self, path: str) -> dict[str, str] | None:
        """The variables bound by `path` (raw, still percent-encoded), or None."""
        if not path.startswith("/"):
            return None
        body = path[1:]
        if self.verb:
            head, sep, verb = body.rpartition(":")
            if not sep or verb != self.verb or "/" in verb:
                return None
            body = head
        elif ":" in body.rsplit("/", 1)[-1] and self.segments and self.segments[-1] != REST:
            # `/v1/x/abc:annul` is a custom method; it does not bind `{name=x/*}` to `x/abc:annul`.
            return None
        parts = body.split("/")
        rest_at = len(self.segments) - 1 if self.segments and self.segments[-1] == REST else -1
        if rest_at < 0 and len(parts) != len(self.segments):
            return None
        if rest_at >= 0 and len(parts) < rest_at:
            return None
        for index, segment in enumerate(self.segments):
            if segment == REST:
                break
            part = parts[index]
            if segment == WILDCARD:
                if not part:
                    return None
            elif unquote(part) != segment:
                return None
        bound: dict[str, str] = {}
        for variable in self.variables:
            end = len(parts) if variable.end < 0 else variable.end
            captured = parts[variable.start : end]
            if len(captured) == 1 and variable.end >= 0 and variable.end - variable.start == 1:
                bound[variable.field_path] = unquote(captured[0])
            else:
                # Multi-segment: decode all but the encoded slash, which stays a literal `%2F`.
                bound[variable.field_path] = "/".join(
                    "%2F".join(unquote(piece) for piece in _ENCODED_SLASH.split(part)) for part in captured
                )
        return bound


def parse_template(text: str) -> PathTemplate:
    if not text.startswith("/"):
        raise TemplateError(f"{text!r}: a template starts with '/'")
    body, verb = text[1:], ""
    last = body.rsplit("/", 1)[-1]
    if ":" in last and "}" not in last.rsplit(":", 1)[1]:
        body, verb = body.rsplit(":", 1)
        if not verb:
            raise TemplateError(f"{text!r}: empty verb")
    segments: list[str] = []
    variables: list[Variable] = []
    position = 0
    for token in _tokens(body, text):
        if token.startswith("{"):
            inner = token[1:-1]
            field_path, _, pattern = inner.partition("=")
            if not _IDENT.match(field_path):
                raise TemplateError(f"{text!r}: bad field path {field_path!r}")
            sub = (pattern or WILDCARD).split("/")
            if any("{" in s or "}" in s for s in sub):
                raise TemplateError(f"{text!r}: variables cannot nest")
            start = position
            segments.extend(sub)
            position += len(sub)
            variables.append(Variable(field_path, start, -1 if sub[-1] == REST else position))
        else:
            segments.append(token)
            position += 1
    for index, segment in enumerate(segments):
        if not segment:
            raise TemplateError(f"{text!r}: empty segment")
        if segment == REST and index != len(segments) - 1:
            raise TemplateError(f"{text!r}: '**' must be the last segment")
    return PathTemplate(text, tuple(segments), tuple(variables), verb)


def _tokens(body: str, text: str) -> list[str]:
    """Segments, with a whole `{...}` variable (which may contain '/') as one token."""
    tokens: list[str] = []
    index = 0
    while index <= len(body):
        if index < len(body) and body[index] == "{":
            close = body.find("}", index)
            if close < 0:
                raise TemplateError(f"{text!r}: unclosed variable")
            tokens.append(body[index : close + 1])
            index = close + 1
            if index < len(body) and body[index] != "/":
                raise TemplateError(f"{text!r}: a variable must fill whole segments")
            index += 1
        else:
            slash = body.find("/", index)
            slash = len(body) if slash < 0 else slash
            tokens.append(body[index:slash])
            index = slash + 1
    return tokens
