"""The 8 custom JMESPath functions: vector N18 plus our own .NET edge cases."""
import math

import pytest

from conftest import VECTORS, load_json, vector_dir
from transforms.mapping import timeutil
from transforms.mapping.errors import ExpressionEvaluationException, TemplateExpressionException
from transforms.mapping.expressions import compile_expression
from transforms.mapping.jmespath_functions import (CUSTOM_FUNCTION_NAMES, FUNCTION_ARITY,
                                                   convert_to_int64, dotnet_pow)
from transforms.mapping.timeutil import DateToken


def run(expression, data):
    return compile_expression(expression, "JmesPath").select_token(data)


# --- vector N18 ----------------------------------------------------------------------------
def _n18_indexes():
    """Case indexes for parametrization; one placeholder (skipped) when vectors are absent."""
    matches = sorted(VECTORS.glob("N18*")) if VECTORS.is_dir() else []
    if not matches:
        return [0]
    return list(range(len(load_json(matches[0] / "cases.json")["cases"])))


_RUNTIME_ERRORS = {
    "invalid-type": "invalid-type",
    "DivideByZeroException": "divide by zero",
    "OverflowException": "too large or too small",
    "ArgumentOutOfRangeException": "out of the range",
}


@pytest.mark.parametrize("index", _n18_indexes())
def test_n18_case(index):
    case = load_json(vector_dir("N18") / "cases.json")["cases"][index]
    expression, data = case["expression"], case["data"]
    if "error" in case:
        error = case["error"]
        if error.startswith("parse/arity"):
            with pytest.raises(TemplateExpressionException, match="could not be parsed"):
                compile_expression(expression, "JmesPath")
            return
        expected = next(msg for kind, msg in _RUNTIME_ERRORS.items() if error.startswith(kind))
        with pytest.raises(ExpressionEvaluationException) as info:
            run(expression, data)
        assert expected in str(info.value)
        return
    result = run(expression, data)
    kind = case["result_type"]
    if kind == "integer":
        assert type(result) is int and result == case["result"]
    elif kind == "float":
        assert type(result) is float
        if "tolerance_digits" in case:
            assert round(result, case["tolerance_digits"]) == case["result"]
        else:
            assert result == case["result"]
    elif kind == "string":
        assert type(result) is str and result == case["result"]
    elif kind == "date":
        assert type(result) is DateToken
        assert result.ticks == timeutil.parse_iso(case["result"])
    else:  # pragma: no cover - unknown result type in the vector
        pytest.fail(f"unknown result_type {kind}")


# --- registration -----------------------------------------------------------------------------
def test_exactly_eight_custom_functions_are_registered():
    assert set(CUSTOM_FUNCTION_NAMES) <= set(FUNCTION_ARITY)
    assert {name: FUNCTION_ARITY[name] for name in CUSTOM_FUNCTION_NAMES} == {
        "add": (2, 2), "subtract": (2, 2), "multiply": (2, 2), "divide": (2, 2), "pow": (2, 2),
        "insertString": (3, 3), "fromUnixTimestamp": (1, 1), "fromUnixTimestampMs": (1, 1)}


@pytest.mark.parametrize("expression", [
    "add(`1`)", "subtract(`1`, `2`, `3`)", "insertString('a', 'b')", "fromUnixTimestampMs()",
    "length(a, b)", "noSuchFunction(a)", "Add(`1`, `2`)", "add(`1`,",
])
def test_arity_and_unknown_functions_fail_at_compile(expression):
    with pytest.raises(TemplateExpressionException, match="could not be parsed"):
        compile_expression(expression, "JmesPath")


# --- arithmetic ------------------------------------------------------------------------------
@pytest.mark.parametrize("expression,data,expected", [
    ("add(a, b)", {"a": 9223372036854775807, "b": 1}, -9223372036854775808),  # unchecked wrap
    ("subtract(a, b)", {"a": -9223372036854775808, "b": 1}, 9223372036854775807),
    ("multiply(a, b)", {"a": 4611686018427387904, "b": 2}, -9223372036854775808),
    ("multiply(a, b)", {"a": 3037000500, "b": 3037000500}, -9223372036709301616),
    ("divide(a, b)", {"a": 40, "b": 50}, 0),
    ("divide(a, b)", {"a": -7, "b": 2}, -3),
    ("divide(a, b)", {"a": 7, "b": -2}, -3),
    ("divide(a, b)", {"a": -7, "b": -2}, 3),
    ("pow(a, b)", {"a": 2, "b": 62}, 4611686018427387904),
    ("pow(a, b)", {"a": -2, "b": 63}, -9223372036854775808),
    ("pow(a, b)", {"a": 2, "b": -1}, 0),  # 0.5 rounds half to even
    ("pow(a, b)", {"a": 0, "b": 0}, 1),
])
def test_integer_arithmetic_is_int64(expression, data, expected):
    result = run(expression, data)
    assert type(result) is int
    assert result == expected


@pytest.mark.parametrize("expression,data,expected", [
    ("add(a, b)", {"a": 1, "b": 0.5}, 1.5),
    ("subtract(a, b)", {"a": 0.5, "b": 1}, -0.5),
    ("multiply(a, `0.0254`)", {"a": 78}, 1.9811999999999999),
    ("divide(a, b)", {"a": 1, "b": 4.0}, 0.25),
    ("divide(a, b)", {"a": 1.0, "b": 0}, math.inf),
    ("divide(a, b)", {"a": -1, "b": 0.0}, -math.inf),
    ("pow(a, b)", {"a": 2.0, "b": 10}, 1024.0),
    ("pow(a, b)", {"a": 10.0, "b": 400}, math.inf),
    ("pow(a, b)", {"a": 0.0, "b": -1}, math.inf),
])
def test_float_arithmetic_is_ieee_double(expression, data, expected):
    result = run(expression, data)
    assert type(result) is float
    assert result == expected


def test_float_zero_by_zero_is_nan_and_negative_pow_domain_is_nan():
    assert math.isnan(run("divide(a, b)", {"a": 0.0, "b": 0}))
    assert math.isnan(run("pow(a, b)", {"a": -8.0, "b": 0.5}))
    assert math.isnan(dotnet_pow(-8.0, 1 / 3))


@pytest.mark.parametrize("expression,data,message", [
    ("divide(a, b)", {"a": 1, "b": 0}, "Attempted to divide by zero."),
    ("divide(a, b)", {"a": -9223372036854775808, "b": -1}, "overflow"),
    ("pow(a, b)", {"a": 2, "b": 63}, "too large or too small for an Int64"),
    ("pow(a, b)", {"a": 0, "b": -1}, "too large or too small for an Int64"),  # +Infinity
    ("add(a, b)", {"a": True, "b": 1},
     "Error: invalid-type, function add expects argument 1 to be one of the following: Integer|Float"),
    ("multiply(a, b)", {"a": 1, "b": "2"},
     "Error: invalid-type, function multiply expects argument 2 to be one of the following: Integer|Float"),
    ("pow(a, b)", {"a": None, "b": 1}, "function pow expects argument 1"),
    ("divide(a, b)", {"a": [1], "b": 1}, "function divide expects argument 1"),
    ("subtract(a, b)", {"a": 1, "b": {"x": 1}}, "function subtract expects argument 2"),
    ("insertString(a, b, c)", {"a": 1, "b": "x", "c": 0},
     "function insertString expects argument 1 to be one of the following: String"),
    ("insertString(a, b, c)", {"a": "x", "b": 2, "c": 0}, "function insertString expects argument 2"),
    ("insertString(a, b, c)", {"a": "x", "b": "y", "c": 1.0},
     "function insertString expects argument 3 to be one of the following: Integer"),
    ("insertString(a, b, c)", {"a": "abc", "b": "y", "c": 4}, "out of the range"),
    ("fromUnixTimestamp(t)", {"t": 1.5}, "function fromUnixTimestamp expects argument 1"),
    ("fromUnixTimestamp(t)", {"t": 253402300800}, "(Parameter 'seconds')"),
    ("fromUnixTimestampMs(t)", {"t": "1000"}, "function fromUnixTimestampMs expects argument 1"),
    ("fromUnixTimestampMs(t)", {"t": -62135596800001}, "(Parameter 'milliseconds')"),
])
def test_runtime_errors(expression, data, message):
    with pytest.raises(ExpressionEvaluationException) as info:
        run(expression, data)
    assert message in str(info.value)


def test_convert_to_int64_rounds_half_to_even_and_checks_range():
    assert convert_to_int64(2.5) == 2
    assert convert_to_int64(3.5) == 4
    assert convert_to_int64(-9223372036854775808.0) == -9223372036854775808
    with pytest.raises(ExpressionEvaluationException):
        convert_to_int64(9223372036854775808.0)
    with pytest.raises(ExpressionEvaluationException):
        convert_to_int64(math.nan)


# --- strings and dates --------------------------------------------------------------------------
def test_insert_string_positions():
    assert run("insertString(a, '-', `0`)", {"a": "abc"}) == "-abc"
    assert run("insertString(a, '-', `3`)", {"a": "abc"}) == "abc-"
    assert run("insertString(a, '-', length(a))", {"a": "abc"}) == "abc-"
    # positions count UTF-16 code units, as StringBuilder.Insert does
    assert run("insertString(a, '-', `2`)", {"a": "\U0001F600x"}) == "\U0001F600-x"
    with pytest.raises(ExpressionEvaluationException, match="out of the range"):
        run("insertString(a, '-', `-1`)", {"a": "abc"})


def test_from_unix_timestamp_returns_date_tokens():
    assert run("fromUnixTimestamp(t)", {"t": 1625677200}) == DateToken(16256772000000000)
    assert run("fromUnixTimestampMs(t)", {"t": 1626799080123}) == DateToken(16267990801230000)
    assert run("fromUnixTimestamp(`-62135596800`)", {}) == DateToken(timeutil.MIN_TICKS)
    assert run("fromUnixTimestampMs(t)", {"t": 253402300799999}).ticks == timeutil.MAX_TICKS - 9999


def test_custom_functions_compose_with_builtins_and_projections():
    data = {"items": [{"v": 1}, {"v": 2}], "ts": 1000}
    assert run("add(length(items), `1`)", data) == 3
    assert run("sum(items[*].v)", data) == 3
    expr = compile_expression("items[*].multiply(v, `10`)", "JmesPath")
    assert expr.select_tokens(data) == [10, 20]


def test_function_on_missing_value_is_a_type_error():
    # null is not a number: JmesPath.Net rejects it with invalid-type, it is not "not found"
    with pytest.raises(ExpressionEvaluationException, match="invalid-type"):
        run("add(missing, `1`)", {})
