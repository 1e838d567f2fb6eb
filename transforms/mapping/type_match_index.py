"""Skip device templates whose type match cannot apply to a message, before running it.

Why: every message is tried against every template's type-match expression (the reference
does the same), and with the example mapping that was two thirds of normalizing (five
recursive scans of each message). Most type matches test fields: ``$..[?(@heartRate)]``,
``$..[?(@systolic && @diastolic)]``, ``$..[?(@event == 'worn')]``, ``Body[?steps]``. None
of them can select anything from a message in which no object has the field. So the
message's object keys are collected once (one walk) and a template runs only when its
*guard* holds: a necessary condition on that key set, derived here from the compiled
expression. When the guard holds, the template runs exactly as before; when it fails,
the expression would have returned no match and raised nothing, so skipping it changes
nothing (``tests/test_type_match_index.py`` compares both paths on many messages).

Guards exist only for shapes whose semantics make them necessary:

* JSONPath key chains (``$.Body.x``) and the scan fast path (``$..[?(@a && @b.c)]``,
  ``$..[?(@x == 'v')]``): every name on a path that must exist is a key of some object;
  ``||`` needs one of its sides (any side without a guard: no guard);
* JMESPath field chains (``a.b``: a null result is "not found") and a top-level filter
  projection over a field chain whose condition is a field, a field chain, ``&&``/``||``
  of those or ``==`` against a non-null literal (a missing field is null: falsy, and
  unequal to anything but null).

Anything else (general JSONPath, functions, ``!=``, comparisons) has no guard and always
runs. A message nested deeper than ``MAX_DEPTH`` gets no key set: every template runs, so
a body too deep to scan fails exactly as it did (the reference's error).
"""
from typing import Callable, FrozenSet, Optional

from transforms.mapping import jsonpath_newtonsoft as _jp

Guard = Callable[[FrozenSet[str]], bool]
#: deeper messages take the path without the index (the scans' own recursion decides)
MAX_DEPTH = 64

# A need is ("all", frozenset(keys)) or ("any", (need, ...)); None: no constraint known.


def _all(keys) -> Optional[tuple]:
    keys = frozenset(k for k in keys if k.__class__ is str)
    return ("all", keys) if keys else None


def _and(needs) -> Optional[tuple]:
    """Every part must hold: unknown parts are dropped (the rest is still necessary)."""
    needs = [n for n in needs if n is not None]
    if not needs:
        return None
    keys = frozenset().union(*(n[1] for n in needs if n[0] == "all"))
    rest = [n for n in needs if n[0] != "all"]
    if not rest:
        return ("all", keys)
    return ("and", ((("all", keys),) if keys else ()) + tuple(rest))


def _or(needs) -> Optional[tuple]:
    """One part must hold: a part without a guard makes the whole unconstrained."""
    needs = list(needs)
    if not needs or any(n is None for n in needs):
        return None
    return ("any", tuple(needs))


# --- JSONPath --------------------------------------------------------------------------------
def _jsonpath_condition(expression) -> Optional[tuple]:
    """Need of a ``[?()]`` expression as the scan fast path evaluates it (only dicts holding
    the tested field can satisfy it, see ``jsonpath_newtonsoft._exists_dict_predicate``)."""
    if isinstance(expression, _jp.CompositeExpression):
        parts = [_jsonpath_condition(e) for e in expression.expressions]
        return _and(parts) if expression.op == "&&" else _or(parts)
    if not isinstance(expression, _jp.BooleanExpression) or isinstance(expression.left, _jp.Literal):
        return None
    keys = _jp.key_chain(expression.left)
    if not keys:
        return None
    return _all(keys)


def _jsonpath_need(expression) -> Optional[tuple]:
    from transforms.mapping import expressions as ex

    if isinstance(expression, ex._JsonPathStrChain):
        return _all(expression.keys)
    if isinstance(expression, ex._JsonPathScanExists):
        filters = _jp.parse(expression.text)
        if len(filters) == 1 and filters[0].__class__ is _jp.QueryScanFilter:
            return _jsonpath_condition(filters[0].expression)
    return None


# --- JMESPath --------------------------------------------------------------------------------
def _jmes_chain(node) -> Optional[tuple]:
    from transforms.mapping import expressions as ex

    keys = ex._field_chain(node)
    return None if keys is None else _all(keys)


def _jmes_condition(node) -> Optional[tuple]:
    kind = node.get("type")
    if kind in ("field", "subexpression"):
        return _jmes_chain(node)
    if kind == "and_expression":
        return _and(_jmes_condition(c) for c in node["children"])
    if kind == "or_expression":
        return _or(_jmes_condition(c) for c in node["children"])
    if kind == "comparator" and node.get("value") == "eq":
        a, b = node["children"]
        for side, other in ((a, b), (b, a)):
            if other.get("type") == "literal" and other.get("value") is not None:
                return _jmes_chain(side)
    return None


def _jmespath_need(expression) -> Optional[tuple]:
    from transforms.mapping import expressions as ex

    if isinstance(expression, ex._JmesPathFieldChain):
        return _all(expression.keys)
    if isinstance(expression, ex._JmesPathGeneral):
        ast = expression.ast
        if ast.get("type") == "filter_projection":
            left, _right, condition = ast["children"]
            if left.get("type") == "identity" or _jmes_chain(left) is not None:
                return _and([_jmes_chain(left) if left.get("type") != "identity" else None,
                             _jmes_condition(condition)])
    return None


# --- guards ----------------------------------------------------------------------------------
def _compile_need(need) -> Guard:
    kind, arg = need
    if kind == "all":
        keys = arg
        if len(keys) == 1:
            (key,) = keys
            return lambda present: key in present
        return keys.issubset
    parts = [_compile_need(n) for n in arg]
    if kind == "and":
        return lambda present: all(p(present) for p in parts)
    return lambda present: any(p(present) for p in parts)


def need_of(expression) -> Optional[tuple]:
    """The key-set condition a match of ``expression`` needs, or None (always run it)."""
    try:
        if expression.language == "JmesPath":
            return _jmespath_need(expression)
        return _jsonpath_need(expression)
    except Exception:  # an unexpected shape: no guard, the expression always runs
        return None


def guard_of(expression) -> Optional[Guard]:
    """``guard(keys) -> bool``: False only when ``expression`` cannot match; None: no guard."""
    need = need_of(expression)
    return None if need is None else _compile_need(need)


#: what ``json.loads`` makes besides containers (and the timestamps a template may see)
_LEAF_TYPES = frozenset((str, int, float, bool, type(None), _jp.DateToken))


class _TooDeep(Exception):
    pass


def _walk(node, keys: set, depth: int) -> None:
    if isinstance(node, dict):
        keys.update(node)
        values = node.values()
    elif isinstance(node, list):
        values = node
    else:
        return
    if _LEAF_TYPES.issuperset(map(type, values)):  # one C-level test for a flat object
        return
    if depth >= MAX_DEPTH:
        raise _TooDeep
    for v in values:
        if v.__class__ is dict and _LEAF_TYPES.issuperset(map(type, v.values())):
            keys.update(v)  # a flat object (an envelope's body, its properties): no call
        elif v.__class__ not in _LEAF_TYPES:
            _walk(v, keys, depth + 1)


def message_keys(message) -> Optional[set]:
    """Every key of every object in ``message`` (through objects and arrays), or None when
    it nests deeper than ``MAX_DEPTH`` (then every template runs, as without the index)."""
    if message.__class__ is dict:
        # An envelope (Body, Properties, SystemProperties) of flat objects, what nearly every
        # message is: its keys without the recursive walk's calls; anything deeper: the walk.
        keys = set(message)
        for v in message.values():
            c = v.__class__
            if c is dict:
                if not _LEAF_TYPES.issuperset(map(type, v.values())):
                    break
                keys.update(v)
            elif c not in _LEAF_TYPES:
                break
        else:
            return keys
    keys = set()
    try:
        _walk(message, keys, 0)
    except (_TooDeep, RecursionError):
        return None
    return keys
