"""Issue 13: `heliograph db migrate` is safe while processes of the previous version still serve.

A store is built and filled by the code of an earlier commit, migrated by this version, and read by
it; then the old code writes to the migrated store again, as a process that has not been restarted
yet would, and this version reads that too. Migrations must therefore stay additive: new columns
with defaults, new tables and indexes, no renames, no changed keys.

One past step was not additive: 024_rollups_by_project (issue 9) re-keyed the rollup tables, so a
process older than it can no longer write once it has run: on SQLite its recorder takes the error for
an unavailable store and journals the records (replayed once it runs the new version); on PostgreSQL
it takes it for a refused record and moves them to `journal/rejected/` (kept, not replayed by itself).
Stop such processes before migrating across 024; the test pins the failure down so it stays the only one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from heliograph.storage import open_store

from .conftest import run_cli

ROOT = Path(__file__).parent.parent
# The commit before "Access foundation: projects table…" (migrations 023 and 024).
BEFORE_PROJECTS = "aff7d6a867d0c7478c5ca02558279dfe5de9fa54"
# The commit before "Dashboard: requests, request detail…" (migration 028 came after it).
BEFORE_DASHBOARD = "e6e238802532fa58e3129f8c16f0b970d6f6a10b"

OLD_WRITER = r'''
import sys, time, uuid
from heliograph.recording.process import to_row
from heliograph.recording.record import RawRecord
from heliograph.storage import open_store
store = open_store(sys.argv[1])
store.migrate()
body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'
answer = (b'{"id": "c1", "object": "chat.completion", "model": "gpt-4o-2024-08-06", "choices": [], '
          b'"usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}')
rows = []
for n in range(int(sys.argv[3])):
    raw = RawRecord(id=f"{sys.argv[2]}-{n}", created_at=time.time() - 60, provider="openai", family="openai",
                    method="POST", path="/openai/v1/chat/completions", target_url="https://api.openai.com/v1/chat/completions",
                    key_id=None, helicone={"helicone-user-id": "old-user", "helicone-property-team": "a"},
                    request_body=body)
    raw.status, raw.response_body, raw.latency_ms = 200, answer, 123.0
    rows.append(to_row(raw, {}))
store.insert_requests(rows)
store.close()
'''


def old_source(tmp_path: Path, commit: str) -> Path:
    done = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src"], capture_output=True)
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the git history is missing: {done.stderr.decode()}")
        pytest.skip("no git history here (an sdist or a shallow clone): the earlier commit cannot be built")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        archive.extractall(tmp_path / "old", filter="data")
    return tmp_path / "old" / "src"


def run_old(source: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_")} | {"PYTHONPATH": str(source)}
    return subprocess.run([sys.executable, "-c", OLD_WRITER, *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    fresh: Callable[[], str] = request.getfixturevalue("fresh_postgres")
    return fresh()


@pytest.mark.parametrize("commit", [BEFORE_DASHBOARD, BEFORE_PROJECTS], ids=["before-dashboard", "before-projects"])
def test_a_store_of_an_earlier_version_migrates_and_stays_writable_by_it(tmp_path: Path, store_url: str,
                                                                          commit: str) -> None:
    source = old_source(tmp_path, commit)
    done = run_old(source, store_url, "before", "5")
    assert done.returncode == 0, done.stderr

    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_")} | {"HELIOGRAPH_DB_URL": store_url}
    migrated = run_cli("db", "migrate", env=env)
    assert migrated.returncode == 0 and "028_requests_cache_hits" in migrated.stdout, migrated.stderr

    # The old version, still serving, keeps writing to the migrated store.
    done = run_old(source, store_url, "after", "3")
    if commit == BEFORE_PROJECTS:
        # Not additive (see above): the old rollup upsert names a key that is gone.
        assert done.returncode != 0 and "ON CONFLICT" in done.stderr
        expected, read = 5, ("before-0", "before-4")
    else:
        assert done.returncode == 0, done.stderr
        expected, read = 8, ("before-0", "after-2")

    store = open_store(store_url)
    try:
        assert not store.migrate()
        assert store.count_requests(project="default") == expected
        for request_id in read:
            row = store.get_request(request_id, project="default")
            assert row is not None, request_id
            assert row["user_id"] == "old-user" and row["prompt_tokens"] == 11 and row["completion_tokens"] == 7
            assert row["project_id"] == "default"
    finally:
        store.close()
