"""
Static cost estimation of CRD validation rules, as the apiextensions API server does it at CRD install.

A real API server compiles every ``x-kubernetes-validations`` rule when a CRD is created or updated and
estimates its worst-case cost, refusing the CRD when:

* one rule's estimated cost, multiplied by the number of times the rule can run (its *cardinality*),
  exceeds ``STATIC_ESTIMATED_COST_LIMIT`` (10,000,000)::

      spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Forbidden:
      estimated rule cost exceeds budget by factor of 52.9x (try simplifying the rule, or adding maxItems,
      maxProperties, and maxLength where arrays, maps, and strings are declared)

* the sum over all rules of one version's schema exceeds ``STATIC_ESTIMATED_CRD_COST_LIMIT``
  (100,000,000): the (up to four) most expensive rules are named ("contributed to estimated rule cost
  total exceeding cost limit for entire OpenAPIv3 schema") and the schema itself is refused
  (``spec.validation.openAPIV3Schema: Forbidden: x-kubernetes-validations estimated rule cost total
  for entire OpenAPIv3 schema exceeds budget by factor of ...``).

How the estimate is made (modelled on the public apiextensions-apiserver, k8s.io/apiserver/pkg/cel and
cel-go's ``checker/cost.go``; our own code):

**Sizes from the schema.** Each schema node becomes a CEL type with a maximum size and a minimum
serialized size. A list's size is its ``maxItems``; without one, as many of its smallest items as fit in
the 3 MiB request limit: ``(3 MiB - 2) / (item min size + 1)``. A map (``additionalProperties``):
``maxProperties`` or ``(3 MiB - 2) / (value min size + 6)``. A string: ``maxLength * 4`` (bytes of UTF-8),
else the longest ``enum`` value, else 32/12/32 characters for ``duration``/``date``/``date-time`` formats,
else ``3 MiB - 2``. Minimum serialized sizes: ``""`` 2, numbers 1, ``true`` 4, ``[]``/``{}`` 2, an object
2 plus ``len(name) + min size + 4`` per required property without a default. Integers, numbers, booleans
and objects reached through a field path have size 0 (as upstream: their type has no max elements).

**Costs of expressions (cel-go).** Identifiers and field selections cost 1, literals 0, ``has()`` 0 (the
Kubernetes environment turns presence-test cost off). ``&&``/``||`` cost both sides, ``?:`` the condition
plus the dearer branch. Creating a list costs 10, a map 30. Most calls cost 1 plus their arguments;
the exceptions are the ones scaling with sizes: ``==``/``!=`` and string/bytes ``<``/``<=``/``>``/``>=``
cost ``ceil(0.1 * min(size of both sides))``, string ``+`` ``ceil(0.1 * result size)``, ``x in list``
the list's size, ``startsWith``/``endsWith`` ``ceil(0.1 * argument size)``, ``contains``
``ceil(0.1 * n) * ceil(0.1 * m)``, ``matches``/``find``/``findAll`` ``ceil(0.1 * (n + 1)) *
ceil(0.25 * regex size)``, and the Kubernetes library's ``lowerAscii``/``upperAscii``/``trim``/
``substring``/``url``/``quantity``/``isQuantity`` (``0.1 * n``), ``replace``/``split`` (``0.2 * n``),
``join``, ``isSorted``/``sum``/``min``/``max``/``indexOf``/``lastIndexOf``. A comprehension (the
macros ``all``, ``exists``, ``exists_one``, ``map``, ``filter``) costs its range, its accumulator and
its result, plus *range size x (loop condition + loop step)*, the step containing the predicate:
per element ``all`` adds 3, ``exists`` 4, ``exists_one`` 2, ``map`` 12, ``filter`` 13. Nested
comprehensions therefore multiply: ``routes.all(r, adapters.exists(a, a.name == r.adapter))`` is about
``|routes| * |adapters| * (0.1 * min(len(name), len(adapter)) + ...)``. ``cel.bind`` costs 10 plus its
parts.

**Cardinality.** A rule runs once per occurrence of its node: the product of the ``maxItems`` /
``maxProperties`` of every list and map above it. When one of them is unbounded, upstream falls back to
``3 MiB / (min size of the node + 1)``.

**Simplifications** (none changes what is over or under the limits for the rules these CRDs use):
expressions are not type-checked against the schema, types are inferred loosely (an unknown field or
function is ``dyn``; its size is unknown, i.e. unbounded); overloads are chosen from that loose type (a
``dyn`` operand takes the dearest overload); unknown functions cost 1 plus their arguments; the
``ip``/``cidr``/``semver``/``authz``/``format`` libraries and two-variable comprehensions are priced as
plain calls; the optional-types syntax is not parsed (a rule celpy cannot parse is not estimated, as it
is not type-checked either); field names are matched as written or in their ``__escaped__`` form;
``x-kubernetes-int-or-string`` is sized by the request limit even with a ``maxLength``, and so is
``metadata.name`` at a resource root (as Kubernetes 1.32, the version the emulator reports; newer servers
honour the ``maxLength`` and bound names to 253 characters). The per-expression limit is not
applied to versions whose schema an update leaves unchanged (as upstream), the total still is.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tandem.api.admission.causes import Cause

MAX_REQUEST_SIZE_BYTES = 3 * 1024 * 1024
STATIC_ESTIMATED_COST_LIMIT = 10_000_000
STATIC_ESTIMATED_CRD_COST_LIMIT = 100_000_000
MAX_UINT64 = 2**64 - 1

_STRING_TRAVERSAL = 0.1  # cost per character of scanning a string
_REGEX_FACTOR = 0.25  # cost per character of a regular expression
_LIST_CREATE = 10
_MAP_CREATE = 30
_STRUCT_CREATE = 40

# Minimum serialized sizes (JSON) of scalar values.
_MIN_STRING = 2  # ""
_MIN_NUMBER = 1  # 0
_MIN_BOOL = 4  # true
_MIN_DURATION = 3  # "0"
_JSON_DATE = 12  # "YYYY-MM-DD"
_MIN_DATETIME = 21
_MAX_DURATION = 32
_MAX_DATETIME = 32

_SCALAR_KINDS = frozenset({"bool", "int", "uint", "double", "duration", "timestamp"})
_CEL_RESERVED = frozenset(
    {
        "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if",
        "import", "let", "loop", "package", "namespace", "return", "var", "void", "while",
    }
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Saturating arithmetic (uint64, as in Go)
# ---------------------------------------------------------------------------------------------------------


def _add(*values: int) -> int:
    return min(sum(values), MAX_UINT64)


def _mul(x: int, y: int) -> int:
    return min(x * y, MAX_UINT64)


def _factor(x: int, factor: float) -> int:
    """x * factor rounded up, saturating (cel-go's multiplyByCostFactor)."""
    product = float(x) * factor
    if product >= 2.0**64:
        return MAX_UINT64
    return math.ceil(product)


@dataclass(frozen=True)
class Size:
    """A size estimate (characters of a string, bytes, items of a list, entries of a map)."""

    min: int
    max: int

    def __add__(self, other: Size) -> Size:
        return Size(_add(self.min, other.min), _add(self.max, other.max))

    def union(self, other: Size) -> Size:
        return Size(min(self.min, other.min), max(self.max, other.max))


UNKNOWN_SIZE = Size(0, MAX_UINT64)


# ---------------------------------------------------------------------------------------------------------
# Schema → CEL declarations with size bounds
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Decl:
    """The CEL type of a schema node, with its bounds (upstream's DeclType)."""

    kind: str  # object, map, list, string, bytes, int, double, bool, dyn, duration, timestamp
    max_elements: int = 0
    min_size: int = 0
    fields: dict[str, Decl] = field(default_factory=dict)
    elem: Decl | None = None
    key: Decl | None = None

    def lookup(self, name: str) -> Decl | None:
        if name in self.fields:
            return self.fields[name]
        if name.startswith("__") and name.endswith("__") and len(name) > 4:
            return self.fields.get(_unescape(name))
        return None


def _unescape(name: str) -> str:
    inner = name[2:-2]
    if inner in _CEL_RESERVED:
        return inner
    replaced = inner.replace("__underscores__", "__").replace("__dot__", ".").replace("__dash__", "-")
    return replaced.replace("__slash__", "/")


def _non_negative(value: Any) -> int:
    return max(int(value), 0)


def _string_decl(schema: Mapping[str, Any]) -> Decl:
    fmt = schema.get("format")
    per_request = MAX_REQUEST_SIZE_BYTES - 2  # minus the quotes
    if fmt == "byte":
        max_len = schema.get("maxLength")
        limit = _non_negative(max_len) if max_len is not None else per_request
        return Decl("bytes", limit, _MIN_STRING)
    if fmt == "duration":
        return Decl("duration", _MAX_DURATION, _MIN_DURATION)
    if fmt == "date":
        return Decl("timestamp", _JSON_DATE, _JSON_DATE)
    if fmt == "date-time":
        return Decl("timestamp", _MAX_DATETIME, _MIN_DATETIME)
    if schema.get("maxLength") is not None:
        # maxLength counts code points; a code point is up to 4 bytes of UTF-8
        return Decl("string", _non_negative(schema["maxLength"]) * 4, _MIN_STRING)
    if schema.get("enum"):
        longest = max((len(v) for v in schema["enum"] if isinstance(v, str)), default=0)
        return Decl("string", longest, _MIN_STRING)
    return Decl("string", per_request, _MIN_STRING)


def _with_type_and_object_meta(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """At a resource root, apiVersion, kind and metadata.name/generateName are always accessible."""
    props = schema.get("properties") or {}
    meta = props.get("metadata") or {}
    meta_props = meta.get("properties") or {}
    if (
        (props.get("kind") or {}).get("type") == "string"
        and (props.get("apiVersion") or {}).get("type") == "string"
        and meta.get("type") == "object"
        and (meta_props.get("name") or {}).get("type") == "string"
        and (meta_props.get("generateName") or {}).get("type") == "string"
    ):
        return schema
    string = {"type": "string"}
    new_props = dict(props)
    new_props["kind"] = string
    new_props["apiVersion"] = string
    new_props["metadata"] = {"type": "object", "properties": {"name": string, "generateName": string}}
    return {**schema, "properties": new_props}


def decl_type(schema: Mapping[str, Any] | None, is_resource_root: bool = False) -> Decl | None:
    """The CEL declaration of a schema node, or None when rules cannot see it (upstream's SchemaDeclType)."""
    if not schema:
        return None
    if schema.get("x-kubernetes-int-or-string"):
        return Decl("dyn", MAX_REQUEST_SIZE_BYTES - 2, 1)
    if is_resource_root:
        schema = _with_type_and_object_meta(schema)
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items")
        if not isinstance(items, Mapping):
            return None
        item = decl_type(items, bool(items.get("x-kubernetes-embedded-resource")))
        if item is None:
            return None
        if schema.get("maxItems") is not None:
            max_items = _non_negative(schema["maxItems"])
        else:
            max_items = (MAX_REQUEST_SIZE_BYTES - 2) // (item.min_size + 1)
        return Decl("list", max_items, 2, elem=item)
    if kind == "object":
        additional = schema.get("additionalProperties")
        if isinstance(additional, Mapping):
            value = decl_type(additional, bool(additional.get("x-kubernetes-embedded-resource")))
            if value is None:
                return None
            if schema.get("maxProperties") is not None:
                max_props = _non_negative(schema["maxProperties"])
            else:
                # key ("" + at least one character), colon, comma, and the smallest value
                max_props = (MAX_REQUEST_SIZE_BYTES - 2) // (value.min_size + 6)
            return Decl("map", max_props, 2, elem=value, key=Decl("string", 0, _MIN_STRING))
        required = set(schema.get("required") or ())
        fields: dict[str, Decl] = {}
        min_size = 2  # {}
        for name, prop in (schema.get("properties") or {}).items():
            prop_decl = decl_type(prop, bool(prop.get("x-kubernetes-embedded-resource")))
            if prop_decl is None:
                continue
            fields[name] = prop_decl
            if name in required and "default" not in prop:
                min_size += len(name) + prop_decl.min_size + 4
        return Decl("object", 0, min_size, fields=fields)
    if kind == "string":
        return _string_decl(schema)
    if kind == "boolean":
        return Decl("bool", 0, _MIN_BOOL)
    if kind == "number":
        return Decl("double", 0, _MIN_NUMBER)
    if kind == "integer":
        return Decl("int", 0, _MIN_NUMBER)
    return None


# ---------------------------------------------------------------------------------------------------------
# Expressions (a small AST from celpy's lark parse tree, with cel-go's macro expansions)
# ---------------------------------------------------------------------------------------------------------


class Expr:
    """A node of the expression tree."""


@dataclass(eq=False)
class Literal(Expr):
    kind: str  # string, bytes, int, uint, double, bool, null
    size: int = 1
    value: int | None = None  # of int literals


@dataclass(eq=False)
class Ident(Expr):
    name: str


@dataclass(eq=False)
class Select(Expr):
    operand: Expr
    name: str
    test_only: bool = False  # has()


@dataclass(eq=False)
class Call(Expr):
    function: str  # operators as cel-go names them: _==_, _&&_, _?_:_, _[_], @in, !_, -_, ...
    args: list[Expr]
    target: Expr | None = None


@dataclass(eq=False)
class ListLit(Expr):
    items: list[Expr]


@dataclass(eq=False)
class MapLit(Expr):
    entries: list[tuple[Expr, Expr]]


@dataclass(eq=False)
class StructLit(Expr):
    values: list[Expr]


@dataclass(eq=False)
class Comprehension(Expr):
    """A macro: all, exists, exists_one, map (2 or 3 arguments), filter; or cel.bind (macro='bind')."""

    macro: str
    range: Expr
    var: str
    args: list[Expr]  # predicate / transform (map with a filter: [filter, transform]); bind: [init, body]


_ACCU = "@result"
_BINARY = {
    "relation_lt": "_<_",
    "relation_le": "_<=_",
    "relation_gt": "_>_",
    "relation_ge": "_>=_",
    "relation_eq": "_==_",
    "relation_ne": "_!=_",
    "relation_in": "@in",
    "addition_add": "_+_",
    "addition_sub": "_-_",
    "multiplication_mul": "_*_",
    "multiplication_div": "_/_",
    "multiplication_mod": "_%_",
}
_MACROS = {"all", "exists", "exists_one", "existsOne", "map", "filter"}
_ESCAPE_RE = re.compile(r"\\(?:[abfnrtv\"'\\`?]|[0-7]{3}|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})")


def _string_literal_size(text: str) -> int:
    raw = text[:1] in "rR"
    if raw:
        text = text[1:]
    quote = text[:3] if text[:3] in ('"""', "'''") else text[:1]
    body = text[len(quote) : len(text) - len(quote)]
    if raw:
        return len(body)
    return len(_ESCAPE_RE.sub("x", body))


class _Builder:
    """Builds an :class:`Expr` from celpy's lark tree (cel-go's parser helper, macros included)."""

    def build(self, tree: Any) -> Expr:
        method = getattr(self, f"_{tree.data}")
        result: Expr = method([c for c in tree.children if c is not None])
        return result

    # expr: conditionalor ["?" conditionalor ":" expr]
    def _expr(self, children: list[Any]) -> Expr:
        if len(children) == 1:
            return self.build(children[0])
        cond, true, false = (self.build(c) for c in children)
        return Call("_?_:_", [cond, true, false])

    def _conditionalor(self, children: list[Any]) -> Expr:
        if len(children) == 1:
            return self.build(children[0])
        return Call("_||_", [self.build(children[0]), self.build(children[1])])

    def _conditionaland(self, children: list[Any]) -> Expr:
        if len(children) == 1:
            return self.build(children[0])
        return Call("_&&_", [self.build(children[0]), self.build(children[1])])

    def _binary(self, children: list[Any]) -> Expr:
        if len(children) == 1:
            return self.build(children[0])
        op_tree, right = children
        return Call(_BINARY[op_tree.data], [self.build(op_tree.children[0]), self.build(right)])

    _relation = _addition = _multiplication = _binary

    def _unary(self, children: list[Any]) -> Expr:
        if len(children) == 1:
            return self.build(children[0])
        # cel-go folds repeated operators: !!x is x, !!!x is !x
        op = children[0].data
        count, operand = 1, children[1]
        while len(operand.children) == 2 and operand.children[0].data == op:
            count, operand = count + 1, operand.children[1]
        inner = self.build(operand)
        if count % 2 == 0:
            return inner
        return Call("!_" if op == "unary_not" else "-_", [inner])

    def _member(self, children: list[Any]) -> Expr:
        return self.build(children[0])

    def _member_dot(self, children: list[Any]) -> Expr:
        return Select(self.build(children[0]), str(children[1]))

    def _member_dot_arg(self, children: list[Any]) -> Expr:
        target = self.build(children[0])
        name = str(children[1])
        args = [self.build(c) for c in children[2].children] if len(children) > 2 else []
        two_args = len(args) == 2 or (len(args) == 3 and name == "map")
        if name in _MACROS and two_args and isinstance(args[0], Ident):
            macro = "exists_one" if name == "existsOne" else name
            return Comprehension(macro, target, args[0].name, args[1:])
        is_cel = isinstance(target, Ident) and target.name == "cel"
        if name == "bind" and is_cel and len(args) == 3 and isinstance(args[0], Ident):
            return Comprehension("bind", ListLit([]), args[0].name, args[1:])
        return Call(name, args, target)

    def _member_index(self, children: list[Any]) -> Expr:
        return Call("_[_]", [self.build(children[0]), self.build(children[1])])

    def _member_object(self, children: list[Any]) -> Expr:
        values = []
        if len(children) > 1:
            values = [self.build(c) for c in children[1].children if not isinstance(c, str)]
        return StructLit(values)

    def _primary(self, children: list[Any]) -> Expr:
        return self.build(children[0])

    def _dot_ident_arg(self, children: list[Any]) -> Expr:
        args = [self.build(c) for c in children[1].children] if len(children) > 1 else []
        return Call(str(children[0]), args)

    def _dot_ident(self, children: list[Any]) -> Expr:
        return Ident(str(children[0]))

    def _ident_arg(self, children: list[Any]) -> Expr:
        name = str(children[0])
        args = [self.build(c) for c in children[1].children] if len(children) > 1 else []
        if name == "has" and len(args) == 1 and isinstance(args[0], Select):
            return Select(args[0].operand, args[0].name, test_only=True)
        return Call(name, args)

    def _ident(self, children: list[Any]) -> Expr:
        return Ident(str(children[0]))

    def _paren_expr(self, children: list[Any]) -> Expr:
        return self.build(children[0])

    def _list_lit(self, children: list[Any]) -> Expr:
        return ListLit([self.build(c) for c in children[0].children] if children else [])

    def _map_lit(self, children: list[Any]) -> Expr:
        if not children:
            return MapLit([])
        parts = [self.build(c) for c in children[0].children]
        return MapLit(list(zip(parts[::2], parts[1::2], strict=True)))

    def _literal(self, children: list[Any]) -> Expr:
        token = children[0]
        kind = token.type
        if kind in ("STRING_LIT", "MLSTRING_LIT"):
            return Literal("string", _string_literal_size(str(token)))
        if kind == "BYTES_LIT":
            return Literal("bytes", _string_literal_size(str(token)[1:]))
        return {
            "INT_LIT": Literal("int", value=_int_literal(str(token))),
            "UINT_LIT": Literal("uint"),
            "FLOAT_LIT": Literal("double"),
            "BOOL_LIT": Literal("bool"),
            "NULL_LIT": Literal("null"),
        }[kind]


def _int_literal(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


class CostEstimationError(Exception):
    """The rule could not be parsed (the emulator does not type-check rules; such rules are not estimated)."""


@functools.lru_cache(maxsize=1024)
def parse(rule: str) -> Expr:
    from celpy.celparser import CELParser  # imported lazily: building the parser takes a moment

    try:
        tree = _parser(CELParser).parse(rule)
    except Exception as e:
        raise CostEstimationError(str(e)) from e
    return _Builder().build(tree)


@functools.cache
def _parser(cls: Any) -> Any:
    return cls()


# ---------------------------------------------------------------------------------------------------------
# Loose types
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Type:
    kind: str  # as Decl.kind, plus uint, null, quantity, url, type, dyn
    elem: _Type | None = None
    key: _Type | None = None
    decl: Decl | None = None


_DYN = _Type("dyn")
_BOOL = _Type("bool")
_STRING = _Type("string")


def _type_of_decl(decl: Decl | None) -> _Type:
    if decl is None:
        return _DYN
    if decl.kind == "list":
        return _Type("list", elem=_type_of_decl(decl.elem), decl=decl)
    if decl.kind == "map":
        return _Type("map", elem=_type_of_decl(decl.elem), key=_STRING, decl=decl)
    return _Type(decl.kind, decl=decl)


# Result types of functions (by name); anything else is dyn.
_RESULT_KINDS = {
    **dict.fromkeys(
        [
            "_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_", "@in", "!_", "_&&_", "_||_", "@not_strictly_false",
            "matches", "startsWith", "endsWith", "contains", "isSorted", "isURL", "isQuantity", "isInteger",
            "isGreaterThan", "isLessThan", "isSemver", "isIP", "isCIDR",
        ],
        "bool",
    ),
    **dict.fromkeys(
        [
            "size", "int", "indexOf", "lastIndexOf", "sign", "compareTo", "asInteger", "getFullYear",
            "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek", "getHours", "getMinutes",
            "getSeconds", "getMilliseconds",
        ],
        "int",
    ),
    **dict.fromkeys(
        [
            "string", "lowerAscii", "upperAscii", "trim", "substring", "replace", "join", "charAt", "format",
            "find", "getScheme", "getHost", "getHostname", "getPort", "getEscapedPath", "quote",
        ],
        "string",
    ),
    "uint": "uint",
    "double": "double",
    "asApproximateFloat": "double",
    "bytes": "bytes",
    "duration": "duration",
    "timestamp": "timestamp",
    "quantity": "quantity",
    "url": "url",
    "type": "type",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# The estimator
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _LocalVar:
    path: tuple[str, ...]
    size: Size | None
    entry: tuple[Size, Size] | None  # (key/index size, value size) of a container, when known
    type: _Type


class _Coster:
    """Walks an expression the way cel-go's checker.Cost does (maximum costs only)."""

    def __init__(self, root: Decl) -> None:
        self.root = root
        self.paths: dict[int, tuple[str, ...]] = {}
        self.sizes: dict[int, Size] = {}
        self.entries: dict[int, tuple[Size, Size]] = {}
        self.types: dict[int, _Type] = {}
        self.scopes: dict[str, list[_LocalVar]] = {}

    # -- bookkeeping ------------------------------------------------------------------------------------

    def _var(self, name: str) -> _LocalVar | None:
        stack = self.scopes.get(name)
        return stack[-1] if stack else None

    def _push(self, name: str, var: _LocalVar) -> None:
        self.scopes.setdefault(name, []).append(var)

    def _pop(self, name: str) -> None:
        self.scopes[name].pop()

    def path(self, e: Expr) -> tuple[str, ...]:
        if isinstance(e, Ident) and (var := self._var(e.name)) is not None:
            return var.path
        return self.paths.get(id(e), ())

    def type(self, e: Expr) -> _Type:
        return self.types.get(id(e), _DYN)

    def _estimate_size(self, path: tuple[str, ...]) -> Size | None:
        """Upstream's sizeEstimator: walk the declarations along the path (after its variable)."""
        if not path:
            return None
        node: Decl | None = self.root
        for name in path[1:]:
            if node is None:
                return None
            if name in ("@items", "@values"):
                node = node.elem
            elif name == "@keys":
                node = node.key
            else:
                node = node.lookup(name)
        if node is None:
            return None
        return Size(0, node.max_elements)

    def size(self, e: Expr) -> Size | None:
        """cel-go's computeSize: computed, literal, schema path, scalar type, local variable."""
        if id(e) in self.sizes:
            return self.sizes[id(e)]
        if isinstance(e, Literal):
            return Size(e.size, e.size)
        if isinstance(e, ListLit):
            return Size(len(e.items), len(e.items))
        if isinstance(e, MapLit):
            return Size(len(e.entries), len(e.entries))
        estimated = self._estimate_size(self.path(e))
        if estimated is not None:
            self.sizes[id(e)] = estimated
            return estimated
        if self.type(e).kind in _SCALAR_KINDS:
            return Size(1, 1)
        if isinstance(e, Ident) and (var := self._var(e.name)) is not None and var.size is not None:
            return var.size
        return None

    def size_or_unknown(self, e: Expr) -> Size:
        return self.size(e) or UNKNOWN_SIZE

    def entry(self, e: Expr) -> tuple[Size, Size] | None:
        if id(e) in self.entries:
            return self.entries[id(e)]
        if isinstance(e, Ident) and (var := self._var(e.name)) is not None:
            return var.entry
        return None

    # -- costs ------------------------------------------------------------------------------------------

    def cost(self, e: Expr) -> int:
        if isinstance(e, Literal):
            self.types[id(e)] = _Type(e.kind)
            return 0
        if isinstance(e, Ident):
            return self._ident(e)
        if isinstance(e, Select):
            return self._select(e)
        if isinstance(e, Call):
            return self._call(e)
        if isinstance(e, ListLit):
            return self._list(e)
        if isinstance(e, MapLit):
            return self._map(e)
        if isinstance(e, StructLit):
            self.types[id(e)] = _DYN
            return _add(*(self.cost(v) for v in e.values), _STRUCT_CREATE)
        if isinstance(e, Comprehension):
            return self._bind(e) if e.macro == "bind" else self._comprehension(e)
        return 0

    def _ident(self, e: Ident) -> int:
        var = self._var(e.name)
        if var is not None:
            self.paths[id(e)] = var.path
            self.types[id(e)] = var.type
        else:
            self.paths[id(e)] = (e.name,)
            self.types[id(e)] = _type_of_decl(self.root) if e.name in ("self", "oldSelf") else _DYN
        return 1

    def _select(self, e: Select) -> int:
        operand_cost = self.cost(e.operand)
        if e.test_only:  # has(): no cost of its own in the Kubernetes environment
            self.types[id(e)] = _BOOL
            return operand_cost
        self.paths[id(e)] = (*self.path(e.operand), e.name)
        operand = self.type(e.operand)
        if operand.kind == "object" and operand.decl is not None:
            self.types[id(e)] = _type_of_decl(operand.decl.lookup(e.name))
        elif operand.kind == "map" and operand.elem is not None:
            self.types[id(e)] = operand.elem
        else:
            self.types[id(e)] = _DYN
        return _add(operand_cost, 1)

    def _list(self, e: ListLit) -> int:
        total = 0
        item_size = Size(MAX_UINT64, 0) if e.items else Size(0, 0)
        elem: _Type | None = None
        for item in e.items:
            total = _add(total, self.cost(item))
            item_size = item_size.union(self.size_or_unknown(item))
            elem = elem or self.type(item)
        self.entries[id(e)] = (Size(1, 1), item_size)
        self.types[id(e)] = _Type("list", elem=elem or _DYN)
        return _add(total, _LIST_CREATE)

    def _map(self, e: MapLit) -> int:
        total = 0
        key_size = val_size = Size(MAX_UINT64, 0) if e.entries else Size(0, 0)
        key_type: _Type | None = None
        val_type: _Type | None = None
        for key, value in e.entries:
            total = _add(total, self.cost(key), self.cost(value))
            key_size = key_size.union(self.size_or_unknown(key))
            val_size = val_size.union(self.size_or_unknown(value))
            key_type, val_type = key_type or self.type(key), val_type or self.type(value)
        self.entries[id(e)] = (key_size, val_size)
        self.types[id(e)] = _Type("map", elem=val_type or _DYN, key=key_type or _DYN)
        return _add(total, _MAP_CREATE)

    def _comprehension(self, e: Comprehension) -> int:
        # cel-go's expansions (parser/macro.go) of the macros into a fold over the range:
        #   all:        init true,  condition @not_strictly_false(accu),  step accu && p, result accu
        #   exists:     init false, condition @not_strictly_false(!accu), step accu || p, result accu
        #   exists_one: init 0,     condition true, step p ? accu + 1 : accu, result accu == 1
        #   map:        init [],    condition true, step accu + [f] (with a filter: p ? accu + [f] : accu)
        #   filter:     init [],    condition true, step p ? accu + [x] : accu
        total = self.cost(e.range)
        range_type = self.type(e.range)
        list_init = e.macro in ("map", "filter")
        if list_init:
            total = _add(total, _LIST_CREATE)  # the [] accumulator
            accu_type = _Type("list", elem=range_type.elem if e.macro == "filter" else _DYN)
            accu = _LocalVar((), Size(0, 0), (Size(1, 1), Size(0, 0)), accu_type)
        else:
            accu_kind = "int" if e.macro == "exists_one" else "bool"
            accu = _LocalVar((), Size(1, 1), None, _Type(accu_kind))
        self._push(_ACCU, accu)

        # the iteration variable: list items (or map keys), path = range path + @items/@keys
        entry = self.entry(e.range)
        range_path = self.path(e.range)
        if range_type.kind == "map":
            var = _LocalVar((*range_path, "@keys"), entry[0] if entry else None, None, range_type.key or _DYN)
        else:
            elem = range_type.elem if range_type.kind == "list" and range_type.elem else _DYN
            var = _LocalVar((*range_path, "@items"), entry[1] if entry else None, None, elem)
        self._push(e.var, var)

        if e.macro == "all":
            loop, step = 2, _add(1, self.cost(e.args[0]))
        elif e.macro == "exists":
            loop, step = 3, _add(1, self.cost(e.args[0]))
        elif e.macro == "exists_one":
            loop, step = 0, _add(self.cost(e.args[0]), 2)  # p + max(accu + 1 = 2, accu = 1)
        elif e.macro == "map":
            transform = self.cost(e.args[-1])
            append = _add(1, 1, transform, _LIST_CREATE)  # accu + [f]
            loop, step = 0, (_add(self.cost(e.args[0]), append) if len(e.args) == 2 else append)
            accu.type = _Type("list", elem=self.type(e.args[-1]))
        else:  # filter
            loop, step = 0, _add(self.cost(e.args[0]), 1, 1, 1, _LIST_CREATE)  # p + (accu + [x])
        self._pop(e.var)

        result = 2 if e.macro == "exists_one" else 1  # accu == 1 / accu
        total = _add(total, result)
        self._pop(_ACCU)

        range_count = self.size_or_unknown(e.range)
        total = _add(total, _mul(range_count.max, _add(loop, step)))
        if list_init:
            self.sizes[id(e)] = range_count
            self.types[id(e)] = accu.type
        else:
            self.sizes[id(e)] = Size(1, 1)
            self.types[id(e)] = _BOOL
        return total

    def _bind(self, e: Comprehension) -> int:
        init, body = e.args
        total = _add(_LIST_CREATE, self.cost(init))  # the empty range [] is still built
        self._push(e.var, _LocalVar(self.path(init), self.size(init), self.entry(init), self.type(init)))
        total = _add(total, self.cost(body))
        self._pop(e.var)
        if (size := self.size(body)) is not None:
            self.sizes[id(e)] = size
        if (entry := self.entry(body)) is not None:
            self.entries[id(e)] = entry
        self.types[id(e)] = self.type(body)
        return total

    def _call(self, e: Call) -> int:
        if e.function == "dyn" and len(e.args) == 1 and e.target is None:
            cost = _add(1, self.cost(e.args[0]))
            if (size := self.size(e.args[0])) is not None:
                self.sizes[id(e)] = size
            self.types[id(e)] = self.type(e.args[0])
            return cost
        arg_costs = [self.cost(a) for a in e.args]
        args_total = _add(*arg_costs)
        target_cost = self.cost(e.target) if e.target is not None else 0
        fn_cost, result_size = self._function(e, arg_costs, args_total)
        self.types.setdefault(id(e), self._result_type(e))
        if result_size is None:
            result_size = self.size(e)
        if result_size is not None:
            self.sizes[id(e)] = result_size
        return _add(target_cost, fn_cost)

    def _result_type(self, e: Call) -> _Type:
        fn, args = e.function, e.args
        if fn in _RESULT_KINDS:
            return _Type(_RESULT_KINDS[fn])
        if fn in ("_+_", "_-_", "_*_", "_/_", "_%_", "-_") and args:
            return self.type(args[0])
        if fn == "_?_:_":
            true = self.type(args[1])
            return true if true.kind != "dyn" else self.type(args[2])
        if fn == "_[_]":
            container = self.type(args[0])
            if container.kind in ("list", "map") and container.elem is not None:
                return container.elem
            return _DYN
        if fn in ("split", "findAll"):
            return _Type("list", elem=_STRING)
        return _DYN

    def _function(self, e: Call, arg_costs: list[int], args_total: int) -> tuple[int, Size | None]:
        """The cost of the call itself plus its arguments (not its target), and its result size if known."""
        fn, args, target = e.function, e.args, e.target
        if fn in ("_&&_", "_||_"):
            return _add(*arg_costs), None
        if fn == "_?_:_":
            true_size, false_size = self.size_or_unknown(args[1]), self.size_or_unknown(args[2])
            true_entry, false_entry = self.entry(args[1]), self.entry(args[2])
            if true_entry is not None and false_entry is not None:
                self.entries[id(e)] = (
                    true_entry[0].union(false_entry[0]),
                    true_entry[1].union(false_entry[1]),
                )
            return _add(arg_costs[0], max(arg_costs[1], arg_costs[2])), true_size.union(false_size)
        if fn in ("_==_", "_!=_"):
            if self.type(args[0]).kind == "quantity" and self.type(args[1]).kind == "quantity":
                return _add(1, args_total), None
            return _add(self._compare(args), args_total), None
        if fn in ("_<_", "_<=_", "_>_", "_>=_"):
            kind = self.type(args[0]).kind
            if kind in ("string", "bytes"):
                return _add(self._compare(args), args_total), None
            if kind == "dyn":
                return _add(max(self._compare(args), 1), args_total), None
            return _add(1, args_total), None
        if fn == "_+_" and len(args) == 2:
            kind = self.type(args[0]).kind
            if kind in ("string", "bytes", "list", "dyn"):
                result = self.size_or_unknown(args[0]) + self.size_or_unknown(args[1])
                left, right = self.entry(args[0]), self.entry(args[1])
                if left is not None and right is not None:
                    self.entries[id(e)] = (left[0].union(right[0]), left[1].union(right[1]))
                scan = _factor(result.max, _STRING_TRAVERSAL)
                if kind == "list":  # concatenation itself is O(1)
                    return _add(1, args_total), result
                if kind == "dyn":  # every overload may apply: the dearest
                    return _add(max(scan, 1), args_total), result
                return _add(scan, args_total), result
            return _add(1, args_total), None
        if fn == "@in" and len(args) == 2:
            if self.type(args[1]).kind == "map":
                return _add(1, args_total), None
            return _add(self.size_or_unknown(args[1]).max, args_total), None
        if fn == "_[_]" and len(args) == 2:
            container = self.type(args[0])
            suffix = "@values" if container.kind == "map" else "@items"
            self.paths[id(e)] = (*self.path(args[0]), suffix)
            entry = self.entry(args[0])
            return _add(1, args_total), (entry[1] if entry else None)
        if target is not None:
            estimate = self._member_function(fn, target, args)
            if estimate is not None:
                return _add(estimate[0], args_total), estimate[1]
        else:
            estimate = self._global_function(fn, args)
            if estimate is not None:
                return _add(estimate[0], args_total), estimate[1]
        return _add(1, args_total), None

    def _compare(self, args: Sequence[Expr]) -> int:
        """==, != and string ordering: a scan of the shorter side (cel-go: 0.1 per character)."""
        smallest = min(self.size_or_unknown(args[0]).max, self.size_or_unknown(args[1]).max)
        return _factor(smallest, _STRING_TRAVERSAL)

    def _member_function(self, fn: str, target: Expr, args: list[Expr]) -> tuple[int, Size | None] | None:
        size = self.size_or_unknown(target)
        if fn in ("startsWith", "endsWith") and len(args) == 1:
            return _factor(self.size_or_unknown(args[0]).max, _STRING_TRAVERSAL), None
        if fn == "contains" and len(args) == 1:
            scan = _factor(size.max, _STRING_TRAVERSAL)
            return _mul(scan, _factor(self.size_or_unknown(args[0]).max, _STRING_TRAVERSAL)), None
        if fn in ("matches", "find", "findAll") and len(args) >= 1:
            scan = _factor(_add(size.max, 1), _STRING_TRAVERSAL)
            regex = _factor(self.size_or_unknown(args[0]).max, _REGEX_FACTOR)
            return _mul(scan, regex), (Size(0, size.max) if fn != "matches" else None)
        if fn in ("lowerAscii", "upperAscii", "substring", "trim"):
            return _factor(size.max, _STRING_TRAVERSAL), size
        if fn == "replace" and len(args) >= 2:
            old, new = self.size_or_unknown(args[0]), self.size_or_unknown(args[1])
            if old.min == 0:
                count, kept = (_add(size.max, 1) if size.max < MAX_UINT64 else size.max), size.max
            elif new.max <= old.min:
                count, kept = 0, size.max
            else:
                count, kept = math.ceil(size.max / old.min), 0
            return _factor(size.max, 2 * _STRING_TRAVERSAL), Size(0, _add(_mul(count, new.max), kept))
        if fn == "split":
            limit = size.max  # worst case: an empty separator, one item per character
            if len(args) > 1 and isinstance(args[1], Literal) and args[1].value is not None:
                limit = max(args[1].value, 0)
            return _factor(size.max, 2 * _STRING_TRAVERSAL), Size(0, limit)
        if fn == "join":
            total = Size(0, 0)
            elem = self._element_size(target)
            if elem is not None:
                total = Size(0, _mul(size.max, elem.max))
            if args:
                total = total + Size(0, _mul(self.size_or_unknown(args[0]).max, max(size.max - 1, 0)))
            return _factor(total.max, _STRING_TRAVERSAL), total
        if fn in ("isSorted", "sum", "max", "min", "indexOf", "lastIndexOf"):
            kind = self.type(target).kind
            if kind == "list":
                per_item = 1
                elem_type = self.type(target).elem
                if elem_type is not None and elem_type.kind in ("string", "bytes"):
                    elem = self._element_size(target) or UNKNOWN_SIZE
                    per_item = _add(1, _factor(elem.max, _STRING_TRAVERSAL))
                return _mul(size.max, per_item), None
            if kind == "string":
                return _factor(size.max, _STRING_TRAVERSAL), None
        if fn == "format":
            return _factor(size.max, _STRING_TRAVERSAL), None
        if fn in (
            "sign", "asInteger", "isInteger", "asApproximateFloat", "isGreaterThan", "isLessThan",
            "compareTo", "add", "sub", "getScheme", "getHostname", "getHost", "getPort", "getEscapedPath",
            "getQuery",
        ):  # fmt: skip
            return 1, None
        return None

    def _global_function(self, fn: str, args: list[Expr]) -> tuple[int, Size | None] | None:
        if fn in ("url", "quantity", "isQuantity") and len(args) == 1:
            size = self.size_or_unknown(args[0])
            return _factor(size.max, _STRING_TRAVERSAL), (size if fn == "url" else None)
        return None

    def _element_size(self, list_expr: Expr) -> Size | None:
        path = self.path(list_expr)
        if path:
            return self._estimate_size((*path, "@items"))
        elem = self.type(list_expr).elem
        if elem is not None and elem.kind in _SCALAR_KINDS:
            return Size(1, 1)
        return None


def estimate(rule: str, decl: Decl) -> int:
    """The estimated worst-case cost of one evaluation of ``rule`` with ``self`` of the given declaration."""
    return _Coster(decl).cost(parse(rule))


# ---------------------------------------------------------------------------------------------------------
# CRDs
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpressionCost:
    """The estimated cost of one rule (or messageExpression) of a CRD schema."""

    path: str  # e.g. spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule
    expression: str
    raw_cost: int  # one evaluation
    cardinality: int  # how many times it can be evaluated per object (1 for messageExpressions)
    cost: int  # raw_cost * cardinality (saturating): what is compared with the limits

    @property
    def over_limit(self) -> bool:
        return self.cost > STATIC_ESTIMATED_COST_LIMIT


@dataclass(frozen=True)
class SchemaCost:
    """The estimated costs of the rules of one version's schema (the per-CRD total is per schema)."""

    path: str  # spec.validation.openAPIV3Schema or spec.versions[i].schema.openAPIV3Schema
    versions: tuple[str, ...]
    expressions: tuple[ExpressionCost, ...]

    @property
    def total(self) -> int:
        return min(sum(e.cost for e in self.expressions), MAX_UINT64)

    @property
    def over_limit(self) -> bool:
        return self.total > STATIC_ESTIMATED_CRD_COST_LIMIT


def _max_elements(schema: Mapping[str, Any]) -> int | None:
    """How many times each child can occur per occurrence of the node (None: unbounded)."""
    kind = schema.get("type")
    if kind == "object" and schema.get("additionalProperties") not in (None, False):
        return _non_negative(schema["maxProperties"]) if schema.get("maxProperties") is not None else None
    if kind == "array":
        return _non_negative(schema["maxItems"]) if schema.get("maxItems") is not None else None
    return 1


def _walk(
    schema: Mapping[str, Any], path: str, cardinality: int | None, is_root: bool
) -> Iterator[ExpressionCost]:
    """Post-order, as the apiserver validates: children first, then the node's own rules."""
    factor = _max_elements(schema)
    child_cardinality = None if cardinality is None or factor is None else _mul(cardinality, factor)
    additional = schema.get("additionalProperties")
    if isinstance(additional, Mapping):
        yield from _walk(additional, f"{path}.additionalProperties", child_cardinality, False)
    for name, prop in (schema.get("properties") or {}).items():
        if isinstance(prop, Mapping):
            yield from _walk(prop, f"{path}.properties[{name}]", child_cardinality, False)
    items = schema.get("items")
    if isinstance(items, Mapping):
        yield from _walk(items, f"{path}.items", child_cardinality, False)
    rules = schema.get("x-kubernetes-validations") or []
    if not rules:
        return
    decl = decl_type(schema, is_root or bool(schema.get("x-kubernetes-embedded-resource")))
    if decl is None:
        return
    fallback = MAX_REQUEST_SIZE_BYTES // (decl.min_size + 1)
    for i, rule in enumerate(rules):
        text = (rule.get("rule") or "").strip()
        if text:
            try:
                raw = estimate(text, decl)
            except CostEstimationError:
                raw = None
            if raw is not None:
                times = cardinality if cardinality is not None else fallback
                yield ExpressionCost(
                    f"{path}.x-kubernetes-validations[{i}].rule",
                    text,
                    raw,
                    times,
                    0 if raw == 0 else _mul(raw, times),
                )
        message_expression = (rule.get("messageExpression") or "").strip()
        if message_expression:
            try:
                raw = estimate(message_expression, decl)
            except CostEstimationError:
                continue
            yield ExpressionCost(
                f"{path}.x-kubernetes-validations[{i}].messageExpression", message_expression, raw, 1, raw
            )


def schema_cost(schema: Mapping[str, Any], path: str = "spec.validation.openAPIV3Schema") -> SchemaCost:
    """Estimate every rule of one ``openAPIV3Schema``."""
    return SchemaCost(path, (), tuple(_walk(schema, path, 1, True)))


def _schemas(crd: Mapping[str, Any]) -> list[tuple[str, tuple[str, ...], Mapping[str, Any]]]:
    """(field path, versions, schema) as the apiserver validates them: one shared schema, or per version."""
    spec = crd.get("spec") or {}
    versions = [v for v in spec.get("versions") or [] if isinstance(v, Mapping)]
    if spec.get("validation"):  # v1beta1 shape
        schema = (spec.get("validation") or {}).get("openAPIV3Schema")
        names = tuple(str(v.get("name")) for v in versions)
        return [("spec.validation.openAPIV3Schema", names, schema)] if schema else []
    if not versions:
        return []
    # The internal version hoists per-version schemas to spec.validation when they are all identical.
    schemas = [v.get("schema") for v in versions]
    if all(s == schemas[0] for s in schemas):
        schema = (schemas[0] or {}).get("openAPIV3Schema")
        names = tuple(str(v.get("name")) for v in versions)
        return [("spec.validation.openAPIV3Schema", names, schema)] if schema else []
    result = []
    for i, version in enumerate(versions):
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if schema:
            result.append((f"spec.versions[{i}].schema.openAPIV3Schema", (str(version.get("name")),), schema))
    return result


def crd_costs(crd: Mapping[str, Any]) -> list[SchemaCost]:
    """Estimate every rule of every schema of an apiextensions.k8s.io/v1 CRD dict."""
    return [
        SchemaCost(path, names, tuple(_walk(schema, path, 1, True))) for path, names, schema in _schemas(crd)
    ]


def _factor_text(cost: int, limit: int) -> str:
    factor = cost / limit
    if factor > 100.0:
        return "more than 100x"
    if factor < 1.5:
        return f"{factor:f}x"
    return f"{factor:.1f}x"


def cost_error_message(cost_name: str, cost: int, limit: int) -> str:
    """The apiserver's wording for a cost over its limit."""
    return (
        f"{cost_name} exceeds budget by factor of {_factor_text(cost, limit)} (try simplifying the rule, or "
        "adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )


def _unchanged_versions(crd: Mapping[str, Any], old: Mapping[str, Any] | None) -> set[str]:
    if old is None:
        return set()

    def by_name(obj: Mapping[str, Any]) -> dict[str, Any]:
        spec = obj.get("spec") or {}
        return {
            str(v.get("name")): v.get("schema") or spec.get("validation")
            for v in spec.get("versions") or []
            if isinstance(v, Mapping)
        }

    new_schemas, old_schemas = by_name(crd), by_name(old)
    return {name for name, s in new_schemas.items() if name in old_schemas and old_schemas[name] == s}


def crd_cost_causes(crd: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[Cause]:
    """
    The apiserver's refusals of a CRD for the estimated cost of its rules (empty when within the limits).

    On updates (``old`` given), the per-expression limit is not applied to the versions whose schema did
    not change, as upstream does; the per-schema total always is.
    """
    unchanged = _unchanged_versions(crd, old)
    causes: list[Cause] = []
    for schema in crd_costs(crd):
        suppress = bool(schema.versions) and all(v in unchanged for v in schema.versions)
        if not suppress:
            for expr in schema.expressions:
                if expr.cost > STATIC_ESTIMATED_COST_LIMIT:
                    name = (
                        "estimated rule cost"
                        if expr.path.endswith(".rule")
                        else "estimated messageExpression cost"
                    )
                    message = cost_error_message(name, expr.cost, STATIC_ESTIMATED_COST_LIMIT)
                    causes.append(Cause(expr.path, f"Forbidden: {message}", "FieldValueForbidden"))
        if schema.total > STATIC_ESTIMATED_CRD_COST_LIMIT:
            # the (up to) four most expensive expressions contributing at least 1% of the limit
            expensive = [e for e in schema.expressions if e.cost >= STATIC_ESTIMATED_CRD_COST_LIMIT // 100]
            expensive.sort(key=lambda e: e.cost, reverse=True)
            causes.extend(
                Cause(
                    e.path,
                    "Forbidden: contributed to estimated rule cost total exceeding cost limit for entire "
                    "OpenAPIv3 schema",
                    "FieldValueForbidden",
                )
                for e in expensive[:4]
            )
            message = cost_error_message(
                "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                schema.total,
                STATIC_ESTIMATED_CRD_COST_LIMIT,
            )
            causes.append(Cause(schema.path, f"Forbidden: {message}", "FieldValueForbidden"))
    return causes
