"""The filter tree: what parses, what is refused and how, and what SQL it becomes (no database)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from heliograph.storage.filters import (
    ALL,
    MAX_DEPTH,
    POSTGRES,
    SQLITE,
    Branch,
    Condition,
    FilterError,
    _like_to_glob,
    compile_filter,
    compile_where_order,
    parse_filter,
    parse_sort,
    property_equalities,
)

RMT = "request_response_rmt"


def test_all_and_empty_mean_everything() -> None:
    assert parse_filter("all") is ALL and parse_filter({}) is ALL and parse_filter(None) is ALL
    assert compile_filter(ALL, SQLITE) == ("1=1", [])


def test_leaf_values_are_converted() -> None:
    node = parse_filter({RMT: {"latency": {"gte": "250"}, "request_created_at": {"lt": "2025-01-02T00:00:00Z"},
                               "cache_enabled": {"equals": "false"}}})
    conditions = _conditions(node)
    assert [(c.column.name, c.op, c.value) for c in conditions] == [
        ("latency", "gte", 250), ("request_created_at", "lt", 1735776000000), ("cache_enabled", "equals", False)]


def test_naive_timestamps_are_utc_and_offsets_are_honoured() -> None:
    naive = _conditions(parse_filter({RMT: {"request_created_at": {"gt": "2025-01-02T00:00:00"}}}))[0]
    offset = _conditions(parse_filter({RMT: {"request_created_at": {"gt": "2025-01-02T01:00:00+01:00"}}}))[0]
    assert naive.value == offset.value == 1735776000000


def test_branches_nest_and_several_entries_are_anded() -> None:
    node = parse_filter({"left": {RMT: {"model": {"equals": "a"}, "user_id": {"equals": "b"}}},
                         "operator": "or", "right": {"request": {"created_at": {"gt": "2025-01-01"}}}})
    assert isinstance(node, Branch) and node.operator == "or"
    assert isinstance(node.left, Branch) and node.left.operator == "and"
    sql, params = compile_filter(node, SQLITE)
    assert sql == "((r.model = ? AND r.user_id = ?) OR r.created_at > ?)"
    assert params == ["a", "b", 1735689600000]


def test_property_keys_are_lower_cased_and_helicone_session_keys_map_to_columns() -> None:
    node = parse_filter({"properties": {"Feature": {"equals": "x"}, "Helicone-Session-Id": {"equals": "s"}}})
    feature, session = _conditions(node)
    assert feature.key == "feature" and feature.column.kind == "property"
    assert session.column.name == "session_id" and session.key is None
    assert property_equalities(node) == [("feature", "x")]


@pytest.mark.parametrize("raw,message", [
    ({RMT: {"modle": {"equals": "x"}}}, "unknown column 'modle' in table 'request_response_rmt'; did you mean 'model'?"),
    ({"requests": {"model": {"equals": "x"}}}, "unknown filter table 'requests'"),
    ({RMT: {"model": {"gt": "x"}}}, "operator 'gt' is not valid for text column 'model'"),
    ({RMT: {"latency": {"gt": "abc"}}}, "expected a number for 'latency' gt, got \"abc\""),
    ({RMT: {"latency": {"gt": True}}}, "expected a number for 'latency' gt, got true"),
    ({RMT: {"latency": {"gt": float("nan")}}}, "expected a finite number"),
    ({RMT: {"status": {"equals": 10**30}}}, "number out of range"),
    ({RMT: {"model": {"equals": 5}}}, "expected a string for 'model' equals, got 5"),
    ({RMT: {"model": {"equals": "a\x00b"}}}, "NUL"),
    ({RMT: {"request_created_at": {"gt": "yesterday"}}}, "expected an ISO 8601 timestamp for 'request_created_at' gt"),
    ({RMT: {"request_created_at": {"contains": "2025"}}}, "operator 'contains' is not valid for timestamp column"),
    ({RMT: {"cached": {"equals": "yes"}}}, "expected true or false for 'cached' equals"),
    ({RMT: {"cached": {"gt": True}}}, "operator 'gt' is not valid for boolean column 'cached'"),
    ({RMT: {"model": {}}}, "'model' needs an object of operators"),
    ({RMT: {"model": "gpt-4o"}}, "'model' needs an object of operators"),
    ({RMT: ["model"]}, "filter table 'request_response_rmt' must map column names to operators"),
    ({RMT: {"properties": {"feature": {"gt": "a"}}}}, "operator 'gt' is not valid for property 'feature'"),
    ({RMT: {"properties": {"feature": {"equals": 1}}}}, "expected a string for property 'feature' equals, got 1"),
    ({RMT: {"properties": ["feature"]}}, "'properties' must map property names to operators"),
    ({RMT: {"properties": {"": {"equals": "x"}}}}, "property names must be non-empty"),
    ({RMT: {"scores": {"q": {"like": "a"}}}}, "operator 'like' is not valid for score 'q'"),
    ({RMT: {"scores": {"q": {"gt": "high"}}}}, "expected a number for score 'q' gt"),
    ({"left": "all", "operator": "xor", "right": "all"}, 'operator must be "and" or "or", got "xor"'),
    ({"left": "all", "operator": "and"}, "is missing 'right'"),
    ({"left": "all", "operator": "and", "right": "all", "extra": 1}, "has unexpected keys 'extra'"),
    ("everything", 'a filter must be "all", a leaf object or a branch object, got "everything"'),
    ([], "a filter must be"),
    # Injection attempts in names never reach SQL: names come from the tables only.
    ({RMT: {"model = model OR 1=1 --": {"equals": "x"}}}, "unknown column 'model = model OR 1=1 --'"),
    ({"request_response_rmt; DROP TABLE requests": {"model": {"equals": "x"}}}, "unknown filter table"),
    ({RMT: {"model": {"equals'; --": "x"}}}, "operator \"equals'; --\" is not valid"),
])
def test_bad_filters_are_refused_naming_the_bad_part(raw: Any, message: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filter(raw)
    assert message in str(caught.value)


def test_deep_nesting_is_refused() -> None:
    node: Any = "all"
    for _ in range(MAX_DEPTH + 5):
        node = {"left": node, "operator": "and", "right": "all"}
    with pytest.raises(FilterError, match="nested more than"):
        parse_filter(node)


def _every_condition_tree() -> Any:
    """One leaf per column and operator, all ORed: exercises every branch of the compiler."""
    from heliograph.storage.filters import OPERATORS, TABLES
    samples = {"text": "v'1", "number": 1, "timestamp": "2025-01-01T00:00:00Z", "boolean": True}
    leaves: list[Any] = []
    for name, column in TABLES[RMT].items():
        kind = column.kind
        if kind in ("property", "score"):
            value_kind = "text" if kind == "property" else "number"
            for op in OPERATORS[kind]:
                leaves.append({RMT: {name: {"k'1": {op: samples[value_kind]}}}})
        else:
            for op in OPERATORS[kind]:
                leaves.append({RMT: {name: {op: samples["boolean" if kind == "feedback" else kind]}}})
    tree = leaves[0]
    for leaf in leaves[1:]:
        tree = {"left": tree, "operator": "or", "right": leaf}
    return tree, len(leaves)


@pytest.mark.parametrize("dialect", [SQLITE, POSTGRES], ids=["sqlite", "postgres"])
def test_every_value_is_a_parameter(dialect: Any) -> None:
    tree, count = _every_condition_tree()
    sql, params = compile_filter(parse_filter(_flatten(tree)), dialect)
    assert count > 100
    assert "v'1" not in sql and "k'1" not in sql and "2025" not in sql
    assert sql.count(dialect.placeholder) == len(params)
    other = "%s" if dialect is SQLITE else "?"
    assert other not in sql.replace("'%s'", "")


def _flatten(tree: Any) -> Any:
    # _every_condition_tree builds a left-deep tree deeper than MAX_DEPTH; rebalance it.
    leaves: list[Any] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict) and "operator" in node:
            stack += [node["right"], node["left"]]
        else:
            leaves.append(node)
    while len(leaves) > 1:
        leaves = [{"left": leaves[i], "operator": "or", "right": leaves[i + 1]} if i + 1 < len(leaves) else leaves[i]
                  for i in range(0, len(leaves), 2)]
    return leaves[0]


def test_dialect_differences_are_only_placeholders_and_like() -> None:
    node = parse_filter({RMT: {"model": {"like": "gpt-4o_%*"}, "user_id": {"contains": "50%_"}}})
    lite, lite_params = compile_filter(node, SQLITE)
    pg, pg_params = compile_filter(node, POSTGRES)
    assert "GLOB ?" in lite and lite_params[0] == "gpt-4o?*[*]"
    assert "LIKE %s ESCAPE ''" in pg and pg_params[0] == "gpt-4o_%*"
    assert lite_params[1] == pg_params[1] == "%50\\%\\_%"
    assert re.sub(r"\?", "%s", lite.split(" AND ")[1]) == pg.split(" AND ")[1]


def test_like_to_glob_escapes_glob_characters() -> None:
    assert _like_to_glob("a%b_c*d?e[f]") == "a*b?c[*]d[?]e[[]f]"


def test_sparse_properties_start_from_the_index() -> None:
    node = parse_filter({"properties": {"tier": {"equals": "rare"}}})
    dense, _ = compile_filter(node, SQLITE)
    sparse, params = compile_filter(node, SQLITE, frozenset({("tier", "rare")}))
    assert dense.startswith("EXISTS (") and sparse.startswith("r.id IN (")
    assert params == ["tier", "rare"]


def test_sort_parsing() -> None:
    keys = parse_sort({"cost": "DESC", "properties": {"Feature": "asc"}})
    assert [(k.expr, k.descending, k.property_key) for k in keys] == [("r.cost", True, None), ("", False, "feature")]
    _, order, params = compile_where_order(ALL, keys, SQLITE)
    assert order == ("r.cost DESC NULLS LAST, (SELECT p.value FROM request_properties p WHERE p.request_id = r.id "
                     "AND p.key = ?) ASC NULLS LAST, r.id DESC")
    assert params == ["feature"]
    assert compile_where_order(ALL, parse_sort(None), POSTGRES)[1] == "r.created_at DESC, r.id DESC"
    with pytest.raises(FilterError, match="cannot sort by 'random'"):
        parse_sort({"random": "asc"})
    with pytest.raises(FilterError, match='must be "asc" or "desc"'):
        parse_sort({"created_at": "up"})
    with pytest.raises(FilterError, match="sort must be an object"):
        parse_sort(["created_at"])


def _conditions(node: Any) -> list[Condition]:
    if isinstance(node, Branch):
        return _conditions(node.left) + _conditions(node.right)
    assert isinstance(node, Condition)
    return [node]
