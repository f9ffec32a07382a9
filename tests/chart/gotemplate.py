"""A small implementation of Go's text/template with the Helm and Sprig functions the Hearth chart
uses, so the chart can be rendered and checked where Helm cannot be installed.

It follows Go's semantics where they bite in charts:
- values files are decoded as Helm decodes them (every number is a float64), so `{{ 1000000 }}`
  from values prints `1e+06` exactly as Helm would, and comparing a value with an int literal
  (`gt .Values.replicas 1`) is an error, as in Go ("incompatible types for comparison");
- a missing map key is "no value" (Helm prints nothing), a field of a nil value is an error,
  an unknown field of `.Release`/`.Chart` is an error;
- `{{-`/`-}}` trim all adjacent whitespace; `and`/`or` short-circuit and return an operand;
- an unknown function is a parse error even in a branch that is never taken.

Anything outside that subset raises `TemplateError` instead of guessing: the chart should stay
within what this file implements (see charts/hearth/templates/_helpers.tpl).
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import yaml


class TemplateError(Exception):
    """A template failed to parse or execute (Helm would refuse to render it)."""


class FailError(TemplateError):
    """The template called `fail` (or `required` on an empty value)."""


# --------------------------------------------------------------------------------------------
# Values as Helm sees them


def helm_numbers(value: Any) -> Any:
    """Decodes YAML values as Helm does: through JSON, so every number becomes a float64."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        return {str(k): helm_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [helm_numbers(v) for v in value]
    return value


def coalesce(base: Any, override: Any) -> Any:
    """Merges user values over chart defaults as Helm does: maps merge, a null deletes a key."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = coalesce(merged[key], value)
        else:
            merged[key] = value
    return merged


class Struct(dict):
    """A Go struct (`.Release`, `.Chart`): reading a field it does not have is an error."""

    def __init__(self, type_name: str, **fields: Any):
        super().__init__(**fields)
        self.type_name = type_name


class Files:
    """`.Files` of a chart: `.Files.Get "path"` returns a file's text ("" when missing)."""

    def __init__(self, root: Path):
        self.root = root

    def Get(self, name: str) -> str:  # noqa: N802 (Go's method name)
        path = self.root / name
        return path.read_text() if path.is_file() else ""


# --------------------------------------------------------------------------------------------
# Printing and truth, as Go's fmt and text/template do them


def go_float(f: float) -> str:
    """fmt's %v of a float64 (strconv's 'g' with the shortest digits): %e notation when the
    decimal exponent is below -4 or at least 6, so 1000000 prints as `1e+06`."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(f)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + exponent  # value = 0.<digits> * 10**point
    exp = point - 1
    prefix = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{prefix}{digits}{'0' * (point - len(digits))}"
    return f"{prefix}{digits[:point]}.{digits[point:]}"


def go_str(value: Any) -> str:
    """fmt's %v of a value."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_str(value[k])}" for k in sorted(value)) + "]"
    raise TemplateError(f"cannot print a {type(value).__name__}")


def strval(value: Any) -> str:
    """Sprig's strval: a string as is, nil as "", anything else as %v."""
    if value is None:
        return ""
    return go_str(value)


def truth(value: Any) -> bool:
    """text/template's notion of true: not nil, false, 0 or empty."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, (str, list, dict, tuple)):
        return len(value) > 0
    return True


def go_quote(text: str) -> str:
    """Go's %q of a string."""
    return json.dumps(text, ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# Functions


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    raise TemplateError(f"invalid type for comparison: {type(value).__name__} ({value!r})")


def _comparable(a: Any, b: Any) -> None:
    if _kind(a) != _kind(b):
        raise TemplateError(f"incompatible types for comparison: {_kind(a)} {a!r} and {_kind(b)} {b!r}")


def fn_eq(a: Any, *others: Any) -> bool:
    if not others:
        raise TemplateError("missing argument for comparison")
    for other in others:
        _comparable(a, other)
        if a == other:
            return True
    return False


def fn_ne(a: Any, b: Any) -> bool:
    _comparable(a, b)
    return a != b


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        _comparable(a, b)
        if isinstance(a, bool):
            raise TemplateError("invalid type for comparison: bool")
        return op(a, b)

    return compare


def to_yaml(value: Any) -> str:
    """Helm's toYaml: YAML of the value without the final newline; whole floats print as ints."""

    def plain(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
            return int(v)
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    text = yaml.safe_dump(plain(value), default_flow_style=False, sort_keys=True, width=1 << 30, allow_unicode=True)
    if text.endswith("...\n"):  # a bare scalar document
        text = text[: -len("...\n")]
    return text.removesuffix("\n")


def fn_indent(spaces: Any, text: Any) -> str:
    pad = " " * int(spaces)
    return pad + strval(text).replace("\n", "\n" + pad)


def fn_trunc(length: Any, text: Any) -> str:
    n, s = int(length), strval(text)
    if n < 0:
        return s[max(len(s) + n, 0):] if len(s) + n > 0 else s
    return s[:n]


def fn_to_int(value: Any) -> int:
    """Sprig's int (cast.ToInt): floats truncate, bad strings become 0."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            return 0
    return 0


def fn_printf(fmt: str, *args: Any) -> str:
    out, i, arg = [], 0, 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        verb = fmt[i + 1] if i + 1 < len(fmt) else ""
        i += 2
        if verb == "%":
            out.append("%")
            continue
        if arg >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        value = args[arg]
        arg += 1
        if verb == "s":
            out.append(value if isinstance(value, str) else f"%!s({type(value).__name__}={go_str(value)})")
        elif verb == "d":
            out.append(str(value) if isinstance(value, int) and not isinstance(value, bool) else f"%!d({type(value).__name__}={go_str(value)})")
        elif verb == "v":
            out.append(go_str(value))
        elif verb == "q":
            out.append(go_quote(strval(value)))
        else:
            raise TemplateError(f"printf verb %{verb} is not implemented")
    if arg < len(args):
        out.append("%!(EXTRA " + ", ".join(go_str(a) for a in args[arg:]) + ")")
    return "".join(out)


def fn_fail(message: Any) -> None:
    raise FailError(strval(message))


def fn_required(message: Any, value: Any) -> Any:
    if value is None or value == "":
        raise FailError(strval(message))
    return value


def fn_dict(*pairs: Any) -> dict:
    if len(pairs) % 2:
        pairs = (*pairs, "")
    return {strval(pairs[i]): pairs[i + 1] for i in range(0, len(pairs), 2)}


def fn_default(default: Any, *given: Any) -> Any:
    value = given[0] if given else None
    return value if truth(value) else default


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "toYaml": to_yaml,
    "toJson": lambda v: json.dumps(v, separators=(",", ":"), sort_keys=True),
    "nindent": lambda n, s: "\n" + fn_indent(n, s),
    "indent": fn_indent,
    "quote": lambda *a: " ".join(go_quote(strval(x)) for x in a if x is not None),
    "squote": lambda *a: " ".join("'" + strval(x) + "'" for x in a if x is not None),
    "default": fn_default,
    "empty": lambda v: not truth(v),
    "printf": fn_printf,
    "print": lambda *a: "".join(go_str(x) for x in a),
    "trunc": fn_trunc,
    "trimSuffix": lambda suffix, s: strval(s).removesuffix(strval(suffix)),
    "trimPrefix": lambda prefix, s: strval(s).removeprefix(strval(prefix)),
    "replace": lambda old, new, s: strval(s).replace(strval(old), strval(new)),
    "contains": lambda sub, s: strval(sub) in strval(s),
    "hasPrefix": lambda prefix, s: strval(s).startswith(strval(prefix)),
    "lower": lambda s: strval(s).lower(),
    "upper": lambda s: strval(s).upper(),
    "b64enc": lambda s: base64.b64encode(strval(s).encode()).decode(),
    "eq": fn_eq,
    "ne": fn_ne,
    "lt": _ordered(lambda a, b: a < b),
    "le": _ordered(lambda a, b: a <= b),
    "gt": _ordered(lambda a, b: a > b),
    "ge": _ordered(lambda a, b: a >= b),
    "not": lambda v: not truth(v),
    "int": fn_to_int,
    "len": lambda v: len(v) if v is not None else 0,
    "list": lambda *a: list(a),
    "dict": fn_dict,
    "hasKey": lambda d, k: isinstance(d, dict) and k in d,
    "required": fn_required,
    "fail": fn_fail,
}
# Evaluated by the engine itself: short-circuit and template calls.
SPECIAL = {"and", "or", "include"}


# --------------------------------------------------------------------------------------------
# Lexing

ACTION = re.compile(r"\{\{")
TOKEN = re.compile(
    r"""\s*(?:
    (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<variable>\$\w*(?:\.\w+)*)
  | (?P<field>(?:\.\w+)+|\.)
  | (?P<ident>[A-Za-z_]\w*)
  | (?P<punct>[()|,])
)""",
    re.VERBOSE,
)


@dataclass
class Tok:
    kind: str
    text: str


def split_actions(source: str, name: str) -> list[tuple[str, str]]:
    """Splits a template into ("text", s) and ("action", body) pieces, applying trim markers."""
    pieces: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    while True:
        start = source.find("{{", pos)
        text = source[pos:] if start < 0 else source[pos:start]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if start < 0:
            pieces.append(("text", text))
            return pieces
        inner = start + 2
        trim_left = source.startswith("- ", inner) or source.startswith("-\n", inner) or source.startswith("-\t", inner)
        if trim_left:
            text = text.rstrip(" \t\r\n")
            inner += 1
        pieces.append(("text", text))
        # Find the closing "}}" outside of string literals.
        i, quote = inner, ""
        while i < len(source):
            c = source[i]
            if quote:
                if c == "\\" and quote == '"':
                    i += 2
                    continue
                if c == quote:
                    quote = ""
            elif c in "\"`":
                quote = c
            elif source.startswith("}}", i):
                break
            i += 1
        else:
            raise TemplateError(f"{name}: unclosed action starting at offset {start}")
        body = source[inner:i]
        trim_next = body.endswith(" -") or body.endswith("\n-") or body.endswith("\t-")
        if trim_next:
            body = body[:-1]
        pieces.append(("action", body.strip()))
        pos = i + 2


def tokenize(body: str, name: str) -> list[Tok]:
    toks, pos = [], 0
    while pos < len(body):
        if body[pos:].strip() == "":
            break
        m = TOKEN.match(body, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"{name}: cannot parse {body[pos:]!r} in action {{{{ {body} }}}}")
        kind = m.lastgroup or ""
        toks.append(Tok(kind, m.group(kind)))
        pos = m.end()
    return toks


# --------------------------------------------------------------------------------------------
# Parse tree


@dataclass
class Operand:
    kind: str  # literal, field, variable, ident, pipe
    value: Any


@dataclass
class Pipeline:
    decl: list[str]
    assign: bool  # `=` rather than `:=`
    commands: list[list[Operand]]


@dataclass
class Node:
    kind: str  # text, action, if, range, with, template
    text: str = ""
    pipe: Pipeline | None = None
    body: list["Node"] = field(default_factory=list)
    orelse: list["Node"] = field(default_factory=list)
    name: str = ""


class Parser:
    def __init__(self, name: str, source: str, defines: dict[str, list[Node]]):
        self.name = name
        self.pieces = split_actions(source, name)
        self.pos = 0
        self.defines = defines

    def parse(self) -> list[Node]:
        nodes, end = self.parse_list()
        if end is not None:
            raise TemplateError(f"{self.name}: unexpected {{{{{end}}}}}")
        return nodes

    def parse_list(self) -> tuple[list[Node], str | None]:
        """Nodes up to an `end` or `else ...` action, returned as the second element."""
        nodes: list[Node] = []
        while self.pos < len(self.pieces):
            kind, text = self.pieces[self.pos]
            self.pos += 1
            if kind == "text":
                if text:
                    nodes.append(Node("text", text=text))
                continue
            if text.startswith("/*"):
                if not text.endswith("*/"):
                    raise TemplateError(f"{self.name}: unclosed comment")
                continue
            word = text.split(None, 1)[0] if text else ""
            rest = text[len(word):].strip()
            if word in ("end", "else"):
                return nodes, text
            if word in ("if", "with", "range"):
                nodes.append(self.parse_block(word, rest))
            elif word == "define":
                name = self.string_literal(rest)
                body, end = self.parse_list()
                if end != "end":
                    raise TemplateError(f"{self.name}: define {name} is not closed by end")
                self.defines[name] = body
            elif word == "template":
                toks = tokenize(rest, self.name)
                name = self.string_literal(toks[0].text)
                pipe = self.pipeline(toks[1:]) if len(toks) > 1 else None
                nodes.append(Node("template", name=name, pipe=pipe))
            elif word in ("block", "break", "continue"):
                raise TemplateError(f"{self.name}: {word} is not implemented")
            else:
                nodes.append(Node("action", pipe=self.pipeline(tokenize(text, self.name))))
        return nodes, None

    def parse_block(self, word: str, rest: str) -> Node:
        node = Node(word, pipe=self.pipeline(tokenize(rest, self.name), allow_two=(word == "range")))
        node.body, end = self.parse_list()
        if end is None:
            raise TemplateError(f"{self.name}: {word} is not closed by end")
        if end == "else":
            node.orelse, end = self.parse_list()
            if end != "end":
                raise TemplateError(f"{self.name}: else of {word} is not closed by end")
        elif end.startswith("else "):
            chained = end[len("else "):].strip()
            chained_word = chained.split(None, 1)[0]
            if chained_word not in ("if", "with") or (word != chained_word):
                raise TemplateError(f"{self.name}: {{{{{end}}}}} after {word} is not supported")
            node.orelse = [self.parse_block(chained_word, chained[len(chained_word):].strip())]
        elif end != "end":
            raise TemplateError(f"{self.name}: unexpected {{{{{end}}}}}")
        return node

    def string_literal(self, text: str) -> str:
        text = text.strip()
        if text.startswith('"'):
            return json.loads(text)
        if text.startswith("`"):
            return text[1:-1]
        raise TemplateError(f"{self.name}: expected a string, got {text!r}")

    def pipeline(self, toks: list[Tok], allow_two: bool = False) -> Pipeline:
        decl: list[str] = []
        assign = False
        # `$x :=`, `$i, $v :=` or `$x =`
        for i, tok in enumerate(toks):
            if tok.kind in ("declare", "assign"):
                names = [t.text for t in toks[:i] if t.kind == "variable"]
                if len(names) * 2 - 1 != i or len(names) > (2 if allow_two else 1):
                    raise TemplateError(f"{self.name}: bad variable declaration")
                decl, assign, toks = names, tok.kind == "assign", toks[i + 1:]
                break
            if tok.kind not in ("variable", "punct") or (tok.kind == "punct" and tok.text != ","):
                break
        commands, _ = self.commands(toks, 0, closing=False)
        return Pipeline(decl, assign, commands)

    def commands(self, toks: list[Tok], pos: int, closing: bool) -> tuple[list[list[Operand]], int]:
        commands: list[list[Operand]] = [[]]
        while pos < len(toks):
            tok = toks[pos]
            pos += 1
            if tok.kind == "punct" and tok.text == "|":
                commands.append([])
            elif tok.kind == "punct" and tok.text == "(":
                inner, pos = self.commands(toks, pos, closing=True)
                commands[-1].append(Operand("pipe", Pipeline([], False, inner)))
            elif tok.kind == "punct" and tok.text == ")":
                if not closing:
                    raise TemplateError(f"{self.name}: unexpected )")
                closing = False
                break
            else:
                commands[-1].append(self.operand(tok))
        if closing:
            raise TemplateError(f"{self.name}: unclosed (")
        if any(not c for c in commands):
            raise TemplateError(f"{self.name}: empty command in pipeline")
        return commands, pos

    def operand(self, tok: Tok) -> Operand:
        if tok.kind == "string":
            return Operand("literal", json.loads(tok.text))
        if tok.kind == "raw":
            return Operand("literal", tok.text[1:-1])
        if tok.kind == "number":
            text = tok.text
            return Operand("literal", float(text) if any(c in text for c in ".eE") else int(text))
        if tok.kind == "field":
            return Operand("field", [] if tok.text == "." else tok.text[1:].split("."))
        if tok.kind == "variable":
            name, *path = tok.text.split(".")
            return Operand("variable", (name, path))
        if tok.kind == "ident":
            if tok.text in ("true", "false"):
                return Operand("literal", tok.text == "true")
            if tok.text == "nil":
                return Operand("literal", None)
            if tok.text not in FUNCTIONS and tok.text not in SPECIAL:
                raise TemplateError(f'{self.name}: function "{tok.text}" not defined')
            return Operand("ident", tok.text)
        raise TemplateError(f"{self.name}: unexpected {tok.text!r}")


# --------------------------------------------------------------------------------------------
# Execution


class Scope:
    """Variables of one template execution, innermost block last."""

    def __init__(self, root: Any):
        self.frames: list[dict[str, Any]] = [{"$": root}]

    def push(self) -> None:
        self.frames.append({})

    def pop(self) -> None:
        self.frames.pop()

    def declare(self, name: str, value: Any) -> None:
        self.frames[-1][name] = value

    def assign(self, name: str, value: Any) -> None:
        for frame in reversed(self.frames):
            if name in frame:
                frame[name] = value
                return
        raise TemplateError(f"undefined variable {name}")

    def get(self, name: str) -> Any:
        for frame in reversed(self.frames):
            if name in frame:
                return frame[name]
        raise TemplateError(f"undefined variable: {name}")


class Engine:
    """Parses a set of templates that share their `define`s, and renders them."""

    def __init__(self) -> None:
        self.defines: dict[str, list[Node]] = {}
        self.templates: dict[str, list[Node]] = {}

    def add(self, name: str, source: str) -> None:
        self.templates[name] = Parser(name, source, self.defines).parse()

    def render(self, name: str, data: Any) -> str:
        out: list[str] = []
        self.walk(self.templates[name], data, Scope(data), out)
        return "".join(out)

    def include(self, name: str, data: Any) -> str:
        if name not in self.defines:
            raise TemplateError(f'no template "{name}" associated with template')
        out: list[str] = []
        self.walk(self.defines[name], data, Scope(data), out)
        return "".join(out)

    def walk(self, nodes: list[Node], dot: Any, scope: Scope, out: list[str]) -> None:
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "action":
                assert node.pipe is not None
                value = self.pipeline(node.pipe, dot, scope)
                if not node.pipe.decl:
                    out.append(go_str(value))
            elif node.kind == "template":
                data = self.pipeline(node.pipe, dot, scope) if node.pipe else None
                out.append(self.include(node.name, data))
            elif node.kind in ("if", "with"):
                assert node.pipe is not None
                scope.push()
                value = self.pipeline(node.pipe, dot, scope)
                if truth(value):
                    self.walk(node.body, value if node.kind == "with" else dot, scope, out)
                else:
                    self.walk(node.orelse, dot, scope, out)
                scope.pop()
            elif node.kind == "range":
                self.walk_range(node, dot, scope, out)

    def walk_range(self, node: Node, dot: Any, scope: Scope, out: list[str]) -> None:
        assert node.pipe is not None
        pipe = Pipeline([], False, node.pipe.commands)
        value = self.pipeline(pipe, dot, scope)
        if value is None:
            items: list[tuple[Any, Any]] = []
        elif isinstance(value, dict):
            items = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list):
            items = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            items = [(i, i) for i in range(value)]
        else:
            raise TemplateError(f"range can't iterate over {go_str(value)}")
        if not items:
            scope.push()
            self.walk(node.orelse, dot, scope, out)
            scope.pop()
            return
        for key, element in items:
            scope.push()
            if len(node.pipe.decl) == 1:
                scope.declare(node.pipe.decl[0], element)
            elif len(node.pipe.decl) == 2:
                scope.declare(node.pipe.decl[0], key)
                scope.declare(node.pipe.decl[1], element)
            self.walk(node.body, element, scope, out)
            scope.pop()

    def pipeline(self, pipe: Pipeline, dot: Any, scope: Scope) -> Any:
        value: Any = None
        for i, command in enumerate(pipe.commands):
            value = self.command(command, dot, scope, value if i else _NO_FINAL)
        for name in pipe.decl:
            (scope.assign if pipe.assign else scope.declare)(name, value)
        return value

    def command(self, command: list[Operand], dot: Any, scope: Scope, final: Any) -> Any:
        head, args = command[0], command[1:]
        if head.kind == "ident":
            name = head.value
            thunks = [lambda a=a: self.operand(a, dot, scope) for a in args]
            if final is not _NO_FINAL:
                thunks.append(lambda: final)
            if name == "and":
                value = None
                for thunk in thunks:
                    value = thunk()
                    if not truth(value):
                        return value
                return value
            if name == "or":
                value = None
                for thunk in thunks:
                    value = thunk()
                    if truth(value):
                        return value
                return value
            values = [thunk() for thunk in thunks]
            if name == "include":
                if len(values) != 2:
                    raise TemplateError("include takes a template name and one argument")
                return self.include(values[0], values[1])
            try:
                return FUNCTIONS[name](*values)
            except TypeError as error:
                raise TemplateError(f"wrong arguments for {name}: {error}") from error
        if head.kind == "field":
            target, method = self.resolve(dot, head.value, ".")
            return self.call_or_value(target, method, args, dot, scope, final, head)
        if head.kind == "variable":
            name, path = head.value
            target, method = self.resolve(scope.get(name), path, name)
            return self.call_or_value(target, method, args, dot, scope, final, head)
        if args or final is not _NO_FINAL:
            raise TemplateError(f"can't give argument to non-function {head.value!r}")
        return self.operand(head, dot, scope)

    def call_or_value(self, target: Any, method: Any, args: list[Operand], dot: Any, scope: Scope, final: Any, head: Operand) -> Any:
        if callable(method):
            values = [self.operand(a, dot, scope) for a in args]
            if final is not _NO_FINAL:
                values.append(final)
            return method(*values)
        if args or final is not _NO_FINAL:
            raise TemplateError(f"can't give argument to non-function {head.value!r}")
        return target

    def operand(self, operand: Operand, dot: Any, scope: Scope) -> Any:
        if operand.kind == "literal":
            return operand.value
        if operand.kind == "pipe":
            return self.pipeline(operand.value, dot, scope)
        if operand.kind == "field":
            value, method = self.resolve(dot, operand.value, ".")
            return method() if callable(method) else value
        if operand.kind == "variable":
            name, path = operand.value
            value, method = self.resolve(scope.get(name), path, name)
            return method() if callable(method) else value
        if operand.kind == "ident":
            return self.command([operand], dot, scope, _NO_FINAL)
        raise TemplateError(f"bad operand {operand!r}")

    @staticmethod
    def resolve(value: Any, path: list[str], origin: str) -> tuple[Any, Any]:
        """Follows `.a.b.c` from `value`; returns (value, method) where method is a bound
        method when the last name is one (`.Files.Get`)."""
        for i, name in enumerate(path):
            where = origin + "." + ".".join(path[: i + 1]) if origin != "." else "." + ".".join(path[: i + 1])
            if value is None:
                raise TemplateError(f"nil pointer evaluating interface {{}}.{name} ({where})")
            if isinstance(value, Struct):
                if name not in value:
                    raise TemplateError(f"can't evaluate field {name} in type {value.type_name} ({where})")
                value = value[name]
            elif isinstance(value, dict):
                value = value.get(name)
            elif hasattr(value, name) and not name.startswith("_"):
                attribute = getattr(value, name)
                if callable(attribute):
                    if i != len(path) - 1:
                        raise TemplateError(f"method {name} must be last in {where}")
                    return None, attribute
                value = attribute
            else:
                raise TemplateError(f"can't evaluate field {name} in type {type(value).__name__} ({where})")
        return value, None


_NO_FINAL = object()


# --------------------------------------------------------------------------------------------
# Charts


@dataclass
class Rendered:
    """A chart rendered as Helm would install it."""

    manifests: dict[str, str]  # template path -> rendered text (empty files dropped)
    notes: str
    crds: dict[str, str]  # crds/ files, installed as they are

    def sourced(self, include_crds: bool = True) -> list[tuple[str, dict]]:
        """Every object with the file it came from, CRDs first (as Helm installs them)."""
        docs: list[tuple[str, dict]] = []
        sources = ({**self.crds, **self.manifests} if include_crds else self.manifests).items()
        for path, text in sources:
            for doc in yaml.safe_load_all(text):
                if doc is None:
                    continue
                if not isinstance(doc, dict):
                    raise TemplateError(f"{path}: a rendered document is not a mapping: {doc!r}")
                docs.append((path, doc))
        return docs

    def objects(self, include_crds: bool = True) -> list[dict]:
        """Every object Helm would install."""
        return [doc for _, doc in self.sourced(include_crds)]


def render_chart(
    chart_dir: Path,
    values_files: list[Path] | None = None,
    release_name: str = "hearth",
    namespace: str = "hearth-system",
    service: str = "Helm",
) -> Rendered:
    """Renders every template of the chart with its values.yaml overlaid by `values_files`."""
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    values = yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}
    for path in values_files or []:
        values = coalesce(values, yaml.safe_load(path.read_text()) or {})
    data = {
        "Values": helm_numbers(values),
        "Release": Struct(
            "chart.Release",
            Name=release_name,
            Namespace=namespace,
            Service=service,
            IsInstall=True,
            IsUpgrade=False,
            Revision=1,
        ),
        "Chart": Struct(
            "chart.Metadata",
            Name=chart["name"],
            Version=chart["version"],
            AppVersion=str(chart.get("appVersion", "")),
            Description=chart.get("description", ""),
        ),
        "Files": Files(chart_dir),
    }
    engine = Engine()
    templates = sorted((chart_dir / "templates").rglob("*"))
    for path in templates:
        if path.is_file():
            engine.add(str(path.relative_to(chart_dir)), path.read_text())
    manifests: dict[str, str] = {}
    notes = ""
    for path in templates:
        if not path.is_file():
            continue
        name = str(path.relative_to(chart_dir))
        if path.name.startswith("_"):
            continue
        try:
            text = engine.render(name, data).replace("<no value>", "")
        except TemplateError as error:
            raise type(error)(f"{name}: {error}") from error
        if path.name == "NOTES.txt":
            notes = text
        elif text.strip():
            manifests[name] = text
    crds = {str(p.relative_to(chart_dir)): p.read_text() for p in sorted((chart_dir / "crds").glob("*.yaml"))}
    return Rendered(manifests, notes, crds)
