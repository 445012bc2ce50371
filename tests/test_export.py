"""`heliograph requests export`: JSON Lines and CSV, streamed, on both stores, while `serve` runs."""

from __future__ import annotations

import csv
import io
import os
import tracemalloc
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from heliograph.api.records import render_request
from heliograph.export import CSV_FIELDS, export
from heliograph.storage import open_store

from .conftest import Gateway, run_cli
from .test_store_contract import T0, make_row

ROWS = 3000
SECOND = 1000


def iso(ms: int) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def seeded_rows(run: str, count: int) -> list[dict[str, Any]]:
    return [make_row(f"{run}-{i:05}", created_at=T0 + i * SECOND, user_id=f"user-{i % 3}",
                     model="gpt-4o" if i % 2 else "gpt-4o-mini", props={"run": run, "n": str(i)},
                     request_body=zlib.compress(orjson.dumps({"model": "gpt-4o", "i": i})))
            for i in range(count)]


@pytest.fixture(scope="module")
def seeded(gateway: Gateway) -> str:
    """ROWS records written straight into the running gateway's database, tagged with a run id."""
    run = uuid.uuid4().hex[:12]
    store = open_store(gateway.db_url)
    rows = seeded_rows(run, ROWS)
    for start in range(0, ROWS, 500):
        store.insert_requests(rows[start:start + 500])
    store.set_scores(f"{run}-00007", {"accuracy": 90}, project="default")
    store.close()
    return run


def mine(run: str) -> str:
    return orjson.dumps({"request_response_rmt": {"properties": {"run": {"equals": run}}}}).decode()


def export_cli(gw: Gateway, *args: str) -> tuple[str, str]:
    result = run_cli("requests", "export", *args, env=gw.env)
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def test_jsonl_streams_every_record_with_the_api_fields(gateway: Gateway, seeded: str) -> None:
    out, err = export_cli(gateway, "--filter", mine(seeded))
    lines = out.splitlines()
    assert len(lines) == ROWS and f"Exported {ROWS} requests." in err
    records = [orjson.loads(line) for line in lines]
    assert [r["request_id"] for r in records] == [f"{seeded}-{i:05}" for i in range(ROWS)]     # oldest first
    api = httpx.get(f"{gateway.url}/api/v1/request/{seeded}-00007",
                    headers={"Authorization": f"Bearer {gateway.key}"}).json()["data"]
    del api["request_body"], api["response_body"]
    assert records[7] == api and records[7]["scores"] == {"accuracy": 90}
    assert "request_body" not in records[0]


def test_csv_has_a_fixed_header_and_json_in_nested_cells(gateway: Gateway, seeded: str, tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    export_cli(gateway, "--format", "csv", "--filter", mine(seeded), "--with-bodies", "--output", str(target))
    reader = csv.reader(io.StringIO(target.read_text(encoding="utf-8"), newline=""))
    header = next(reader)
    assert header == list(CSV_FIELDS)
    rows = [dict(zip(header, row)) for row in reader]
    assert len(rows) == ROWS
    row = rows[7]
    assert orjson.loads(row["properties"]) == {"run": seeded, "n": "7"}
    assert orjson.loads(row["scores"]) == {"accuracy": 90} and orjson.loads(row["attempts"]) == []
    assert orjson.loads(row["request_body"]) == {"model": "gpt-4o", "i": 7}
    assert row["streamed"] == "false" and row["time_to_first_token"] == "" and row["response_status"] == "200"

    bare, _ = export_cli(gateway, "--format", "csv", "--filter", mine(seeded), "--limit", "2")
    assert next(csv.reader(io.StringIO(bare))) == [f for f in CSV_FIELDS if f not in ("request_body", "response_body")]
    empty, _ = export_cli(gateway, "--format", "csv", "--user", "nobody-at-all")
    assert empty.splitlines() == [",".join(f for f in CSV_FIELDS if "body" not in f)]


def test_shorthand_filters_combine_with_the_filter_tree(gateway: Gateway, seeded: str) -> None:
    out, _ = export_cli(gateway, "--filter", mine(seeded), "--user", "user-1", "--model", "gpt-4o",
                        "--since", iso(T0 + 100 * SECOND), "--until", iso(T0 + 400 * SECOND), "--limit", "20")
    records = [orjson.loads(line) for line in out.splitlines()]
    # user-1 is i % 3 == 1; gpt-4o is odd i: i % 6 == 1, from 100 (inclusive) to 400 (exclusive)
    assert [r["request_id"] for r in records] == [f"{seeded}-{i:05}" for i in range(100, 400) if i % 6 == 1][:20]


def test_bad_filters_are_usage_errors(gateway: Gateway) -> None:
    for args, message in ((("--filter", "{not json"), "not valid JSON"),
                          (("--filter", '{"request_response_rmt": {"colour": {"equals": "x"}}}'), "unknown column"),
                          (("--since", "yesterday"), "ISO 8601")):
        result = run_cli("requests", "export", *args, env=gateway.env)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_export_from_postgres(fresh_postgres: Any) -> None:
    url = fresh_postgres()
    store = open_store(url)
    store.migrate()
    store.insert_requests(seeded_rows("pg", 1200))
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_")} | {"HELIOGRAPH_DB_URL": url}
    result = run_cli("requests", "export", "--user", "user-2", env=env)
    assert result.returncode == 0, result.stderr
    ids = [orjson.loads(line)["request_id"] for line in result.stdout.splitlines()]
    assert ids == [f"pg-{i:05}" for i in range(1200) if i % 3 == 2]


def test_csv_fields_are_the_records_fields() -> None:
    assert list(CSV_FIELDS) == list(render_request({**make_row("x"), "scores": {}}))


class EndlessStore:
    """Stands in for a store of `count` rows, made as they are read, never held."""

    def __init__(self, count: int) -> None:
        self.count = count

    def iter_requests(self, node: Any = None, *, project: str, with_bodies: bool = False,
                      limit: int | None = None) -> Iterator[dict[str, Any]]:
        for i in range(self.count if limit is None else min(limit, self.count)):
            yield {**make_row(f"r-{i:06}", created_at=T0 + i, props={"i": str(i)}), "scores": {}}


class CountingSink(io.RawIOBase):
    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.size += len(data)
        return len(data)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_memory_stays_flat_whatever_the_size(fmt: str) -> None:
    """10k records (3–10 MB of output) pass with the peak of 2k (~0.4 MB): nothing accumulates."""
    peaks = []
    for count in (2_000, 10_000):
        sink = CountingSink()
        tracemalloc.start()
        try:
            assert export(EndlessStore(count), sink, fmt, project="default",  # type: ignore[arg-type]
                          with_bodies=True) == count
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert sink.size > count * 300
    assert peaks[1] < peaks[0] * 1.5, peaks


def test_export_reads_one_project(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'projects.db'}"
    store = open_store(url)
    store.migrate()
    store.create_project("proj_b", "team-b")
    store.insert_requests([*(make_row(f"a-{i}", created_at=T0 + i) for i in range(3)),
                           *(make_row(f"b-{i}", created_at=T0 + i, project_id="proj_b") for i in range(2))])
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_")} | {"HELIOGRAPH_DB_URL": url}

    def exported(*args: str) -> list[str]:
        result = run_cli("requests", "export", *args, env=env)
        assert result.returncode == 0, result.stderr
        return [orjson.loads(line)["request_id"] for line in result.stdout.splitlines()]

    assert exported() == exported("--project", "default") == ["a-0", "a-1", "a-2"]
    assert exported("--project", "team-b") == exported("--project", "proj_b") == ["b-0", "b-1"]
    unknown = run_cli("requests", "export", "--project", "nope", env=env)
    assert unknown.returncode == 1 and "no project 'nope'" in unknown.stderr and not unknown.stdout
