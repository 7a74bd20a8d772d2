"""
CEL validation rules (``x-kubernetes-validations``) evaluated with cel-python (``celpy``).

``self`` is bound to the value at the schema node, ``oldSelf`` to the previous value at the same
path on updates. Rules referencing ``oldSelf`` (transition rules) are skipped when there is no old
value (creation, or a newly added field), as the apiserver does.

Besides the standard CEL (``has()``, ``size()``, ``matches()``, ``startsWith``, ``endsWith``,
``contains``, ``all``/``exists``/``exists_one``/``map``/``filter``, ``int()``/``string()``/...,
``timestamp()``/``duration()``), these functions of the Kubernetes CEL environment are provided:

* strings: ``lowerAscii``, ``upperAscii``, ``trim``, ``replace(a, b[, n])``, ``split(sep[, n])``,
  ``substring(start[, end])``, ``indexOf``, ``lastIndexOf``, ``charAt``, ``join`` (on lists),
  ``format`` (%s/%d only)
* lists: ``isSorted``, ``sum``, ``min``, ``max``, ``indexOf``, ``lastIndexOf``
* regex: ``find``, ``findAll``
* URLs: ``isURL``, ``url(s)`` with ``getScheme``, ``getHost``, ``getHostname``, ``getPort``,
  ``getEscapedPath``, ``getQuery``
* quantities (loosely): ``isQuantity``, ``quantity(s)`` with ``isGreaterThan``/``isLessThan``/``compareTo``/
  ``asInteger``/``asApproximateFloat``, ``sign``, ``isInteger``

Not supported: ``optionalOldSelf`` semantics (optional types), ``ip``/``cidr`` libraries,
``authz``, runtime cost limits (a rule is never stopped for cost while it runs; the static estimate at CRD
install is in ``cel_cost``), type-checking at CRD creation.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
import urllib.parse
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from tandem.api.admission.causes import Cause

_OLDSELF_RE = re.compile(r"\boldSelf\b")


def _s(value: Any) -> celtypes.StringType:
    return celtypes.StringType(value)


# --- strings -------------------------------------------------------------------------------------------


def _lower_ascii(s: Any) -> Any:
    return _s(str(s).lower())


def _upper_ascii(s: Any) -> Any:
    return _s(str(s).upper())


def _trim(s: Any) -> Any:
    return _s(str(s).strip())


def _replace(s: Any, old: Any, new: Any, n: Any = None) -> Any:
    return _s(str(s).replace(str(old), str(new), -1 if n is None else int(n)))


def _split(s: Any, sep: Any, n: Any = None) -> Any:
    limit = -1 if n is None else int(n)
    if limit == 0:
        return celtypes.ListType([])
    parts = str(s).split(str(sep), limit - 1 if limit > 0 else -1)
    return celtypes.ListType([_s(p) for p in parts])


def _substring(s: Any, start: Any, end: Any = None) -> Any:
    return _s(str(s)[int(start) :] if end is None else str(s)[int(start) : int(end)])


def _char_at(s: Any, i: Any) -> Any:
    text = str(s)
    return _s(text[int(i)] if int(i) < len(text) else "")


def _index_of(container: Any, item: Any, start: Any = None) -> Any:
    if isinstance(container, str):
        return celtypes.IntType(str(container).find(str(item), 0 if start is None else int(start)))
    items = list(container)
    return celtypes.IntType(items.index(item) if item in items else -1)


def _last_index_of(container: Any, item: Any) -> Any:
    if isinstance(container, str):
        return celtypes.IntType(str(container).rfind(str(item)))
    items = list(container)
    for i in range(len(items) - 1, -1, -1):
        if items[i] == item:
            return celtypes.IntType(i)
    return celtypes.IntType(-1)


def _join(items: Any, sep: Any = "") -> Any:
    return _s(str(sep).join(str(i) for i in items))


def _format(fmt: Any, args: Any) -> Any:
    values = iter(list(args))
    return _s(re.sub(r"%[sdf]", lambda _m: str(next(values, "")), str(fmt)))


# --- lists ---------------------------------------------------------------------------------------------


def _is_sorted(items: Any) -> Any:
    values = list(items)
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(values)))


def _sum(items: Any) -> Any:
    values = list(items)
    total: Any = values[0] if values else celtypes.IntType(0)
    for v in values[1:]:
        total = total + v
    return total


def _min(items: Any) -> Any:
    return min(list(items))


def _max(items: Any) -> Any:
    return max(list(items))


# --- regex ---------------------------------------------------------------------------------------------


def _find(s: Any, pattern: Any) -> Any:
    m = re.search(str(pattern), str(s))
    return _s(m.group(0) if m else "")


def _find_all(s: Any, pattern: Any, n: Any = None) -> Any:
    found = [m.group(0) for m in re.finditer(str(pattern), str(s))]
    if n is not None and int(n) >= 0:
        found = found[: int(n)]
    return celtypes.ListType([_s(f) for f in found])


# --- urls ----------------------------------------------------------------------------------------------


def _is_url(s: Any) -> Any:
    try:
        parsed = urllib.parse.urlparse(str(s))
    except ValueError:
        return celtypes.BoolType(False)
    return celtypes.BoolType(bool(parsed.scheme) and (bool(parsed.netloc) or str(s).startswith("/")))


def _url(s: Any) -> Any:
    parsed = urllib.parse.urlparse(str(s))
    return celtypes.MapType(
        {
            _s("__url__"): _s(str(s)),
            _s("scheme"): _s(parsed.scheme),
            _s("host"): _s(parsed.netloc),
            _s("hostname"): _s(parsed.hostname or ""),
            _s("port"): _s(str(parsed.port) if parsed.port else ""),
            _s("path"): _s(parsed.path),
            _s("query"): celtypes.MapType(
                {
                    _s(k): celtypes.ListType([_s(x) for x in v])
                    for k, v in urllib.parse.parse_qs(parsed.query).items()
                }
            ),
        }
    )


def _url_getter(field: str) -> Any:
    def getter(u: Any) -> Any:
        return u[_s(field)]

    return getter


# --- quantities (approximate) --------------------------------------------------------------------------

_SUFFIXES: dict[str, Decimal] = {
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse_quantity(s: str) -> Decimal | None:
    m = _QUANTITY_RE.match(s.strip())
    if not m:
        return None
    try:
        return Decimal(m.group(1)) * _SUFFIXES[m.group(2) or ""]
    except InvalidOperation:
        return None


def _is_quantity(s: Any) -> Any:
    return celtypes.BoolType(parse_quantity(str(s)) is not None)


def _quantity(s: Any) -> Any:
    value = parse_quantity(str(s))
    if value is None:
        raise ValueError(f"invalid quantity: {s}")
    return celtypes.MapType({_s("__quantity__"): _s(str(value))})


def _qv(q: Any) -> Decimal:
    if isinstance(q, Mapping):
        return Decimal(str(q[_s("__quantity__")]))
    return Decimal(str(q))


def _q_compare(a: Any, b: Any) -> Any:
    x, y = _qv(a), _qv(b)
    return celtypes.IntType((x > y) - (x < y))


# -------------------------------------------------------------------------------------------------------

FUNCTIONS: dict[str, Any] = {
    "lowerAscii": _lower_ascii,
    "upperAscii": _upper_ascii,
    "trim": _trim,
    "replace": _replace,
    "split": _split,
    "substring": _substring,
    "charAt": _char_at,
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "join": _join,
    "format": _format,
    "isSorted": _is_sorted,
    "sum": _sum,
    "min": _min,
    "max": _max,
    "find": _find,
    "findAll": _find_all,
    "isURL": _is_url,
    "url": _url,
    "getScheme": _url_getter("scheme"),
    "getHost": _url_getter("host"),
    "getHostname": _url_getter("hostname"),
    "getPort": _url_getter("port"),
    "getEscapedPath": _url_getter("path"),
    "getQuery": _url_getter("query"),
    "isQuantity": _is_quantity,
    "quantity": _quantity,
    "compareTo": _q_compare,
    "isGreaterThan": lambda a, b: celtypes.BoolType(_qv(a) > _qv(b)),
    "isLessThan": lambda a, b: celtypes.BoolType(_qv(a) < _qv(b)),
    "asInteger": lambda q: celtypes.IntType(int(_qv(q))),
    "asApproximateFloat": lambda q: celtypes.DoubleType(float(_qv(q))),
    "sign": lambda q: celtypes.IntType((_qv(q) > 0) - (_qv(q) < 0)),
    "isInteger": lambda q: celtypes.BoolType(_qv(q) == int(_qv(q))),
}

_ENV = celpy.Environment()


class CELError(Exception):
    pass


@functools.lru_cache(maxsize=2048)
def compile_rule(text: str) -> Any:
    """Compile (and cache) a CEL expression into a celpy runner. Raises CELError on syntax errors."""
    try:
        ast = _ENV.compile(text)
        return _ENV.program(ast, functions=FUNCTIONS)
    except Exception as e:  # celpy raises its own parse errors
        raise CELError(f"compilation failed: {e}") from e


def evaluate(text: str, self_value: Any, old_value: Any = None, *, has_old: bool = False) -> Any:
    """Evaluate an expression with ``self`` (and ``oldSelf``) bound to JSON values. Raises CELError."""
    runner = compile_rule(text)
    activation: dict[str, Any] = {"self": json_to_cel(self_value)}
    if has_old:
        activation["oldSelf"] = json_to_cel(old_value)
    try:
        result = runner.evaluate(activation)
    except Exception as e:
        raise CELError(str(e) or type(e).__name__) from e
    if isinstance(result, CELEvalError | Exception):
        raise CELError(str(result.args[0] if result.args else result))
    return result


def _schema_type(schema: Mapping[str, Any]) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "string"
    return str(schema.get("type") or "object")


def _join_path(path: str, field_path: str) -> str:
    # fieldPath is like ".spec.foo" or ".foo['bar']" or ".items[0]", relative to the node.
    if not field_path:
        return path
    rel = field_path[1:] if field_path.startswith(".") else field_path
    rel = re.sub(r"\['([^']*)'\]", r"[\1]", rel)
    if rel.startswith("["):
        return f"{path}{rel}"
    return f"{path}.{rel}" if path else rel


def check_rules(schema: Mapping[str, Any], value: Any, old: Any, *, path: str, has_old: bool) -> list[Cause]:
    """Evaluate the node's ``x-kubernetes-validations`` for the value; return the failures as causes."""

    causes: list[Cause] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        text = rule.get("rule") or ""
        if not text:
            continue
        is_transition = bool(_OLDSELF_RE.search(text))
        if is_transition and not has_old:
            continue  # transition rules are not evaluated on creation / for new values
        field = _join_path(path, rule.get("fieldPath") or "")
        shown_type = _schema_type(schema)
        try:
            result = evaluate(text, value, old if has_old else None, has_old=has_old)
        except CELError as e:
            causes.append(Cause(field, f'Invalid value: "{shown_type}": {e}: evaluating rule: {text}'))
            continue
        if bool(result):
            continue
        message = rule.get("message") or f"failed rule: {text}"
        if rule.get("messageExpression"):
            # The apiserver falls back to the static message on messageExpression errors.
            with contextlib.suppress(CELError):
                message = str(
                    evaluate(rule["messageExpression"], value, old if has_old else None, has_old=has_old)
                )
        reason = rule.get("reason") or "FieldValueInvalid"
        if reason == "FieldValueForbidden":
            causes.append(Cause(field, f"Forbidden: {message}", reason))
        elif reason == "FieldValueRequired":
            causes.append(Cause(field, f"Required value: {message}", reason))
        elif reason == "FieldValueDuplicate":
            causes.append(Cause(field, f'Duplicate value: "{shown_type}": {message}', reason))
        else:
            causes.append(Cause(field, f'Invalid value: "{shown_type}": {message}', "FieldValueInvalid"))
    return causes
