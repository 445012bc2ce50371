"""Helicone's filter tree → a validated tree → parameterised SQL, one implementation for both stores.

    node   := "all" | leaf | branch
    branch := {"left": node, "operator": "and" | "or", "right": node}
    leaf   := {table: {column: {op: value, …}, …}, …}      several entries are ANDed
              {table: {"properties": {key: {op: value}}}}  (also the table "properties" itself)
              {table: {"scores": {name: {op: value}}}}

`parse_filter` checks everything a client sent and raises `FilterError` naming the bad part;
`compile_filter` turns the checked tree into SQL over `requests r` for a `Dialect`. Column names
and operators only ever come from the tables below; every value is a bound parameter.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias

import orjson

Kind = Literal["text", "number", "timestamp", "boolean", "property", "score", "feedback"]

# SQLite refuses expressions nested ~1,000 deep (each branch is a few levels of SQL) and more than
# 32,766 bound values; a filter a person writes is a few levels and a few dozen conditions.
MAX_DEPTH = 32
MAX_CONDITIONS = 1_000
INT64_MAX = 2**63 - 1
FEEDBACK_SCORE = "helicone-score-feedback"


class FilterError(ValueError):
    """A filter or sort a client sent that we cannot run; the message names the bad part."""


@dataclass(frozen=True, slots=True)
class Dialect:
    name: Literal["sqlite", "postgres"]
    placeholder: str

    def sql(self, text: str) -> str:
        """SQL written with `?` placeholders, in this dialect's style."""
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)


SQLITE = Dialect("sqlite", "?")
POSTGRES = Dialect("postgres", "%s")


# -- the column catalogue --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind
    expr: str = ""          # SQL over `requests r`; empty for the map-like kinds


def _col(name: str, kind: Kind, expr: str | None = None) -> Column:
    return Column(name, kind, f"r.{name}" if expr is None else expr)


_REQUEST_COLUMNS = [
    _col("request_id", "text", "r.id"), _col("user_id", "text"), _col("model", "text"),
    _col("request_model", "text"), _col("response_model", "text"), _col("provider", "text"),
    _col("status", "number"), _col("latency", "number", "r.latency_ms"),
    _col("time_to_first_token", "number", "r.ttft_ms"), _col("cost", "number"),
    _col("prompt_tokens", "number"), _col("completion_tokens", "number"), _col("total_tokens", "number"),
    _col("prompt_cache_read_tokens", "number"), _col("prompt_cache_write_tokens", "number"),
    _col("reasoning_tokens", "number"),
    _col("request_created_at", "timestamp", "r.created_at"),
    _col("response_created_at", "timestamp", "(r.created_at + r.latency_ms)"),
    _col("cache_enabled", "boolean"), _col("cache_reference_id", "text"),
    # A cache hit is the one case where the record points at the request it was served from.
    _col("cached", "boolean", "(r.cache_reference_id IS NOT NULL)"),
    _col("prompt_id", "text"), _col("prompt_version", "text"), _col("request_name", "text"),
    _col("session_id", "text"), _col("session_path", "text"), _col("session_name", "text"),
    _col("path", "text"), _col("target_url", "text"), _col("pricing_status", "text"),
    Column("properties", "property"), Column("scores", "score"), Column(FEEDBACK_SCORE, "feedback"),
    _col("scored", "boolean", "(EXISTS (SELECT 1 FROM request_scores s WHERE s.request_id = r.id))"),
]
_RMT = {c.name: c for c in _REQUEST_COLUMNS}

# Helicone's clients address the same row as `request_response_rmt` (ClickHouse), or with the older
# `request` / `response` tables, whose column names differ a little.
TABLES: dict[str, dict[str, Column]] = {
    "request_response_rmt": _RMT,
    "request_response_log": _RMT,
    "request": _RMT | {"id": _RMT["request_id"], "created_at": _RMT["request_created_at"],
                       "prompt_tokens": _RMT["prompt_tokens"]},
    "response": _RMT | {"model": _RMT["response_model"], "body_model": _RMT["response_model"],
                        "body_tokens": _RMT["total_tokens"], "delay_ms": _RMT["latency"],
                        "created_at": _RMT["response_created_at"]},
}
PROPERTIES_TABLE = "properties"   # the legacy leaf {"properties": {key: {op: v}}}

OPERATORS: dict[Kind, tuple[str, ...]] = {
    "text": ("equals", "not-equals", "like", "ilike", "contains", "not-contains"),
    "property": ("equals", "not-equals", "like", "ilike", "contains", "not-contains"),
    "number": ("equals", "not-equals", "gt", "gte", "lt", "lte"),
    "score": ("equals", "not-equals", "gt", "gte", "lt", "lte"),
    "timestamp": ("equals", "gt", "gte", "lt", "lte"),
    "boolean": ("equals",),
    "feedback": ("equals",),
}
_COMPARE = {"equals": "=", "not-equals": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_NEGATED = {"not-equals": "equals", "not-contains": "contains"}

# Helicone keeps session and prompt ids as properties; we keep them in columns.
_PROPERTY_COLUMNS = {"helicone-session-id": _RMT["session_id"], "helicone-session-path": _RMT["session_path"],
                     "helicone-session-name": _RMT["session_name"], "helicone-prompt-id": _RMT["prompt_id"],
                     "helicone-user-id": _RMT["user_id"]}


# -- the checked tree ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class All:
    pass


@dataclass(frozen=True, slots=True)
class Condition:
    column: Column
    op: str
    value: Any              # already converted: str, int/float, epoch ms, bool
    key: str | None = None  # property key (lower-cased) or score name


@dataclass(frozen=True, slots=True)
class Branch:
    left: Node
    operator: Literal["and", "or"]
    right: Node


Node: TypeAlias = All | Condition | Branch
ALL = All()


def _show(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)


def _and(nodes: list[Node]) -> Node:
    """Balanced, so a leaf of many columns nests log2(n) deep in SQL, not n."""
    if not nodes:
        return ALL
    if len(nodes) == 1:
        return nodes[0]
    middle = len(nodes) // 2
    return Branch(_and(nodes[:middle]), "and", _and(nodes[middle:]))


def parse_filter(raw: Any, depth: int = 0) -> Node:
    node = _parse_node(raw, depth)
    if depth == 0 and (count := _conditions(node)) > MAX_CONDITIONS:
        raise FilterError(f"filter has {count} conditions; at most {MAX_CONDITIONS} are allowed")
    return node


def _conditions(node: Node) -> int:
    count, stack = 0, [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Branch):
            stack += [current.left, current.right]
        elif isinstance(current, Condition):
            count += 1
    return count


def _parse_node(raw: Any, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise FilterError(f"filter is nested more than {MAX_DEPTH} levels deep")
    if raw == "all" or raw is None:
        return ALL
    if not isinstance(raw, dict):
        raise FilterError(f'a filter must be "all", a leaf object or a branch object, got {_show(raw)}')
    if "operator" in raw or "left" in raw or "right" in raw:
        return _parse_branch(raw, depth)
    return _and([_parse_table(table, columns) for table, columns in raw.items()])


def _parse_branch(raw: dict[str, Any], depth: int) -> Node:
    missing = [k for k in ("left", "operator", "right") if k not in raw]
    extra = sorted(set(raw) - {"left", "operator", "right"})
    if missing or extra:
        problem = f"is missing {', '.join(repr(m) for m in missing)}" if missing else \
            f"has unexpected keys {', '.join(repr(e) for e in extra)}"
        raise FilterError(f"a filter branch needs exactly 'left', 'operator' and 'right'; this one {problem}")
    operator = raw["operator"]
    if operator not in ("and", "or"):
        raise FilterError(f'filter branch operator must be "and" or "or", got {_show(operator)}')
    return Branch(_parse_node(raw["left"], depth + 1), operator, _parse_node(raw["right"], depth + 1))


def _parse_table(table: str, columns: Any) -> Node:
    if table == PROPERTIES_TABLE:
        return _parse_map(_RMT["properties"], columns)
    catalogue = TABLES.get(table)
    if catalogue is None:
        known = ", ".join([*TABLES, PROPERTIES_TABLE])
        raise FilterError(f"unknown filter table {table!r} (known tables: {known})")
    if not isinstance(columns, dict):
        raise FilterError(f"filter table {table!r} must map column names to operators, got {_show(columns)}")
    nodes: list[Node] = []
    for name, ops in columns.items():
        column = catalogue.get(name)
        if column is None:
            hint = difflib.get_close_matches(name, catalogue, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            raise FilterError(f"unknown column {name!r} in table {table!r}{suggestion}")
        if column.kind in ("property", "score"):
            nodes.append(_parse_map(column, ops))
        else:
            nodes.append(_parse_ops(column, ops, f"{column.name!r}", None))
    return _and(nodes)


def _parse_map(column: Column, entries: Any) -> Node:
    label = "property" if column.kind == "property" else "score"
    if not isinstance(entries, dict):
        raise FilterError(f"'{column.name}' must map {label} names to operators, got {_show(entries)}")
    nodes: list[Node] = []
    for key, ops in entries.items():
        if not key or "\x00" in key:
            raise FilterError(f"{label} names must be non-empty text, got {_show(key)}")
        if column.kind == "property":
            key = key.lower()   # stored keys are lower-cased (contract §14 #11)
            if key in _PROPERTY_COLUMNS:
                nodes.append(_parse_ops(_PROPERTY_COLUMNS[key], ops, f"property {key!r}", None))
                continue
        nodes.append(_parse_ops(column, ops, f"{label} {key!r}", key))
    return _and(nodes)


def _parse_ops(column: Column, ops: Any, label: str, key: str | None) -> Node:
    valid = OPERATORS[column.kind]
    if not isinstance(ops, dict) or not ops:
        raise FilterError(f"{label} needs an object of operators such as {{\"{valid[0]}\": …}}, got {_show(ops)}")
    nodes: list[Node] = []
    for op, value in ops.items():
        if op not in valid:
            kind = "text" if column.kind == "property" else "number" if column.kind == "score" else column.kind
            what = label if key is not None else f"{kind} column {label}"
            raise FilterError(f"operator {op!r} is not valid for {what} (valid: {', '.join(valid)})")
        nodes.append(Condition(column, op, _value(column.kind, value, f"{label} {op}"), key))
    return _and(nodes)


def _value(kind: Kind, value: Any, where: str) -> Any:
    if kind in ("text", "property"):
        if not isinstance(value, str):
            raise FilterError(f"expected a string for {where}, got {_show(value)}")
        if "\x00" in value:
            raise FilterError(f"{where}: text may not contain NUL characters")
        return value
    if kind in ("number", "score"):
        if kind == "score" and isinstance(value, bool):
            return int(value)           # scores store booleans as 1/0
        return _number(value, where)
    if kind == "timestamp":
        return _timestamp(value, where)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise FilterError(f"expected true or false for {where}, got {_show(value)}")


def _number(value: Any, where: str) -> int | float:
    number: int | float
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FilterError(f"expected a number for {where}, got {_show(value)}")
    if isinstance(value, str):
        try:
            number = int(value) if value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            raise FilterError(f"expected a number for {where}, got {_show(value)}") from None
    else:
        number = value
    if isinstance(number, float) and not math.isfinite(number):
        raise FilterError(f"expected a finite number for {where}, got {_show(value)}")
    if isinstance(number, int) and abs(number) > INT64_MAX:
        raise FilterError(f"number out of range for {where}: {value}")
    return number


def iso_ms(value: Any) -> int | None:
    """An ISO 8601 text (UTC when it has no offset) as epoch ms, or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def _timestamp(value: Any, where: str) -> int:
    ms = iso_ms(value)
    if ms is None:
        raise FilterError(f"expected an ISO 8601 timestamp for {where} "
                          f"(such as \"2025-01-31T12:00:00Z\"), got {_show(value)}")
    return ms


# -- sorting ---------------------------------------------------------------------------------------

# name → (expression, nullable). NULLs sort last in both dialects; saying so only where a column can
# be NULL keeps PostgreSQL walking the created_at index backwards for the default sort.
SORT_COLUMNS: dict[str, tuple[str, bool]] = {
    "created_at": ("r.created_at", False), "request_created_at": ("r.created_at", False),
    "latency": ("r.latency_ms", False), "status": ("r.status", False), "provider": ("r.provider", False),
    "cost": ("r.cost", True), "total_tokens": ("r.total_tokens", True), "prompt_tokens": ("r.prompt_tokens", True),
    "completion_tokens": ("r.completion_tokens", True), "time_to_first_token": ("r.ttft_ms", True),
    "user_id": ("r.user_id", True), "model": ("r.model", True), "body_model": ("r.model", True),
    "request_name": ("r.request_name", True),
}


@dataclass(frozen=True, slots=True)
class SortKey:
    expr: str                     # from SORT_COLUMNS, or "" for a property
    descending: bool
    nullable: bool = True
    property_key: str | None = None


DEFAULT_SORT = (SortKey("r.created_at", True, nullable=False),)


def _direction(value: Any, where: str) -> bool:
    if isinstance(value, str) and value.lower() in ("asc", "desc"):
        return value.lower() == "desc"
    raise FilterError(f'sort direction for {where} must be "asc" or "desc", got {_show(value)}')


def parse_sort(raw: Any) -> tuple[SortKey, ...]:
    if raw is None or raw == {}:
        return DEFAULT_SORT
    if not isinstance(raw, dict):
        raise FilterError(f'sort must be an object such as {{"created_at": "desc"}}, got {_show(raw)}')
    keys: list[SortKey] = []
    for name, value in raw.items():
        if name == "properties" and isinstance(value, dict):
            for key, direction in value.items():
                keys.append(SortKey("", _direction(direction, f"property {key!r}"), True, str(key).lower()))
        elif name in SORT_COLUMNS:
            expr, nullable = SORT_COLUMNS[name]
            keys.append(SortKey(expr, _direction(value, repr(name)), nullable))
        else:
            raise FilterError(f"cannot sort by {name!r} (sortable: {', '.join([*SORT_COLUMNS, 'properties'])})")
    return tuple(keys) or DEFAULT_SORT


# -- compiling -------------------------------------------------------------------------------------

def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like_to_glob(pattern: str) -> str:
    """SQLite's LIKE ignores case; GLOB does not, so a case-sensitive `like` becomes a GLOB."""
    glob = {"%": "*", "_": "?", "*": "[*]", "?": "[?]", "[": "[[]"}
    return "".join(glob.get(ch, ch) for ch in pattern)


def property_equalities(node: Node) -> list[tuple[str, str]]:
    """(key, value) of every property `equals` in the tree: candidates for an index-driven plan."""
    if isinstance(node, Branch):
        return property_equalities(node.left) + property_equalities(node.right)
    if isinstance(node, Condition) and node.column.kind == "property" and node.op == "equals" and node.key:
        return [(node.key, node.value)]
    return []


class _Compiler:
    def __init__(self, dialect: Dialect, sparse: frozenset[tuple[str, str]]) -> None:
        self.dialect = dialect
        self.sparse = sparse
        self.params: list[Any] = []

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return self.dialect.placeholder

    def node(self, node: Node) -> str:
        if isinstance(node, All):
            return "1=1"
        if isinstance(node, Branch):
            return f"({self.node(node.left)} {node.operator.upper()} {self.node(node.right)})"
        return self.condition(node)

    def condition(self, c: Condition) -> str:
        kind = c.column.kind
        if kind == "property":
            return self.property(c)
        if kind in ("score", "feedback"):
            name = FEEDBACK_SCORE if kind == "feedback" else c.key
            value = int(c.value) if kind == "feedback" else c.value
            return (f"EXISTS (SELECT 1 FROM request_scores s WHERE s.request_id = r.id "
                    f"AND s.name = {self.bind(name)} AND s.value {_COMPARE[c.op]} {self.bind(value)})")
        if kind == "text":
            return self.text(c.column.expr, c.op, c.value, nullable=True)
        return f"{c.column.expr} {_COMPARE[c.op]} {self.bind(c.value)}"

    def property(self, c: Condition) -> str:
        if c.op == "equals" and (c.key, c.value) in self.sparse:
            # Few rows have it: start from the (key, value) index rather than from the newest rows.
            return (f"r.id IN (SELECT p.request_id FROM request_properties p "
                    f"WHERE p.key = {self.bind(c.key)} AND p.value = {self.bind(c.value)})")
        # Negations hold for rows without the property too, as Helicone's map column does.
        positive = _NEGATED.get(c.op, c.op)
        inner = (f"SELECT 1 FROM request_properties p WHERE p.request_id = r.id AND p.key = {self.bind(c.key)} "
                 f"AND {self.text('p.value', positive, c.value, nullable=False)}")
        return f"{'NOT EXISTS' if c.op in _NEGATED else 'EXISTS'} ({inner})"

    def text(self, expr: str, op: str, value: str, *, nullable: bool) -> str:
        if op in _NEGATED:
            test = f"NOT ({self.text(expr, _NEGATED[op], value, nullable=False)})"
            return f"({expr} IS NULL OR {test})" if nullable else test
        if op == "equals":
            return f"{expr} = {self.bind(value)}"
        if op == "contains":
            return f"lower({expr}) LIKE lower({self.bind('%' + _escape_like(value) + '%')}) ESCAPE '\\'"
        if op == "ilike":
            suffix = " ESCAPE ''" if self.dialect.name == "postgres" else ""
            return f"lower({expr}) LIKE lower({self.bind(value)}){suffix}"
        # like: case-sensitive, no escape character, in both dialects
        if self.dialect.name == "sqlite":
            return f"{expr} GLOB {self.bind(_like_to_glob(value))}"
        return f"{expr} LIKE {self.bind(value)} ESCAPE ''"

    def order(self, keys: tuple[SortKey, ...]) -> str:
        parts = []
        for key in keys:
            expr = key.expr
            if key.property_key is not None:
                expr = (f"(SELECT p.value FROM request_properties p WHERE p.request_id = r.id "
                        f"AND p.key = {self.bind(key.property_key)})")
            nulls = " NULLS LAST" if key.nullable else ""
            parts.append(f"{expr} {'DESC' if key.descending else 'ASC'}{nulls}")
        parts.append(f"r.id {'DESC' if keys[0].descending else 'ASC'}")   # stable pages
        return ", ".join(parts)


def compile_filter(node: Node, dialect: Dialect,
                   sparse: frozenset[tuple[str, str]] = frozenset()) -> tuple[str, list[Any]]:
    """A WHERE condition over `requests r` and its parameters.

    `sparse`: property (key, value) pairs known to be rare (see `property_equalities`); only a
    planning hint, the rows matched are the same either way.
    """
    compiler = _Compiler(dialect, sparse)
    return compiler.node(node), compiler.params


def compile_where_order(node: Node, sort: tuple[SortKey, ...], dialect: Dialect,
                        sparse: frozenset[tuple[str, str]] = frozenset()) -> tuple[str, str, list[Any]]:
    """WHERE condition and ORDER BY list sharing one parameter list (WHERE's parameters first)."""
    compiler = _Compiler(dialect, sparse)
    where = compiler.node(node)
    order = compiler.order(sort)
    return where, order, compiler.params

