"""Issue 13: the banner, discoverable and checked configuration, and logs (text, JSON, access lines)
that never carry a credential or a body."""

from __future__ import annotations

import io
import json
import logging
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from heliograph import __version__
from heliograph.ops.logs import BatchedStreamHandler
from heliograph.settings import SETTINGS, Settings

from .conftest import free_port, run_cli, start_gateway
from heliograph.testing import FakeUpstream

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "BODY-MARKER-5521 tell me a story"}]}


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_") or k.startswith("HELIOGRAPH_TEST_")}
    return env | {"HELIOGRAPH_DB_URL": f"sqlite:///{tmp_path / 'ops.db'}"} | extra


# -- configuration you can discover ------------------------------------------------------------

def test_version(tmp_path: Path) -> None:
    result = run_cli("--version", env=env_for(tmp_path))
    assert result.returncode == 0 and result.stdout.strip() == f"heliograph {__version__}"


def test_serve_help_lists_every_setting_with_its_variable_and_default(tmp_path: Path) -> None:
    text = run_cli("serve", "--help", env=env_for(tmp_path)).stdout
    assert "--log-format [text|json]" in text
    for setting in SETTINGS:
        line = next((l for l in text.splitlines() if l.strip().startswith(f"{setting.name}  {setting.env}")), None)
        assert line is not None, f"{setting.name} missing from serve --help"
        if not setting.secret and setting.default not in ("", ()):
            assert f"[default: {setting.default}]" in line


def test_unknown_variable_is_an_error_with_the_nearest_name(tmp_path: Path) -> None:
    result = run_cli("keys", "list", env=env_for(tmp_path, HELIOGRAPH_DB_ULR="sqlite:///elsewhere.db"))
    assert result.returncode == 2
    assert "unknown environment variable HELIOGRAPH_DB_ULR; did you mean HELIOGRAPH_DB_URL?" in result.stderr
    far = run_cli("config", "show", env=env_for(tmp_path, HELIOGRAPH_ZZZZ_QQQQ="1"))
    assert far.returncode == 2 and "HELIOGRAPH_ZZZZ_QQQQ" in far.stderr and "serve --help" in far.stderr


def test_test_service_variables_and_the_client_key_are_not_settings_but_allowed(tmp_path: Path) -> None:
    env = env_for(tmp_path, HELIOGRAPH_TEST_POSTGRES_URL="postgresql://x@127.0.0.1:1/y",
                  HELIOGRAPH_TEST_REDIS_URL="redis://127.0.0.1:1/0", HELIOGRAPH_KEY="sk-hg-whatever")
    assert run_cli("config", "show", env=env).returncode == 0


def test_unknown_provider_names_are_errors_with_the_nearest_name(tmp_path: Path) -> None:
    upstream = run_cli("config", "show", env=env_for(tmp_path, HELIOGRAPH_UPSTREAM_OPENIA="http://127.0.0.1:9"))
    assert upstream.returncode == 2 and "unknown provider 'openia'" in upstream.stderr
    assert "did you mean openai?" in upstream.stderr and "HELIOGRAPH_CUSTOM_PROVIDERS" in upstream.stderr
    key = run_cli("config", "show", env=env_for(tmp_path, HELIOGRAPH_PROVIDER_KEY_ANTROPIC="sk-ant-x"))
    assert key.returncode == 2 and "did you mean anthropic?" in key.stderr and "sk-ant-x" not in key.stderr
    config = tmp_path / "c.toml"
    config.write_text('[upstreams]\ngorq = "http://127.0.0.1:9"\n')
    table = run_cli("--config", str(config), "config", "show", env=env_for(tmp_path))
    assert table.returncode == 2 and "did you mean groq?" in table.stderr
    # A new provider is declared, then accepted, its key too.
    declared = run_cli("config", "show", env=env_for(tmp_path, HELIOGRAPH_UPSTREAM_MYLLM="http://127.0.0.1:9",
                                                     HELIOGRAPH_PROVIDER_KEY_MYLLM="k",
                                                     HELIOGRAPH_CUSTOM_PROVIDERS="myllm"))
    assert declared.returncode == 0, declared.stderr
    assert json.loads(declared.stdout)["upstreams"] == {"myllm": "http://127.0.0.1:9"}


def test_bad_values_name_the_setting_and_what_it_expects(tmp_path: Path) -> None:
    cases = {"HELIOGRAPH_PORT": ("eighty", "expected a whole number"),
             "HELIOGRAPH_WORKERS": ("0", "at least 1"),
             "HELIOGRAPH_LOG_FORMAT": ("xml", "expected one of text, json"),
             "HELIOGRAPH_ACCESS_LOG": ("maybe", "expected true or false"),
             "HELIOGRAPH_OTEL_ENDPOINT": ("collector:4318", "http:// or https://"),
             "HELIOGRAPH_UPSTREAM_READ_TIMEOUT": ("soon", "expected a number")}
    for variable, (value, expected) in cases.items():
        result = run_cli("config", "show", env=env_for(tmp_path, **{variable: value}))
        assert result.returncode == 2, variable
        assert variable in result.stderr and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_keys_create_says_which_store_it_wrote_to(tmp_path: Path) -> None:
    created = run_cli("keys", "create", "--name", "a", env=env_for(tmp_path))
    assert f"in the store SQLite {tmp_path.resolve() / 'ops.db'}" in created.stdout


# -- banner and logs ---------------------------------------------------------------------------

def test_banner_names_version_listen_url_store_redis_upstreams_journal_and_keys(tmp_path: Path, fake: FakeUpstream) -> None:
    gw = start_gateway(tmp_path, fake.url)
    try:
        log = gw.log()
    finally:
        gw.stop()
    assert f"Heliograph {__version__}" in log
    assert f"listening on {gw.url}" in log
    assert f"store: SQLite {gw.db_path.resolve()}" in log
    assert "redis: off" in log and f"upstream overrides: anthropic={fake.url}" in log
    assert f"journal: {(gw.db_path.parent / 'journal').resolve()}" in log
    assert "keys: 1 active" in log


def test_banner_says_how_to_make_the_first_key(tmp_path: Path) -> None:
    port = free_port()
    env = env_for(tmp_path, HELIOGRAPH_PORT=str(port))
    import subprocess
    import sys
    import time
    process = subprocess.Popen([sys.executable, "-m", "heliograph.cli.main", "serve"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.05)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "no keys yet — run `heliograph keys create --name my-app`" in output


SECRETS = ("sk-provider-held-secret-0001", "sk-client-own-secret-0002", "BODY-MARKER-5521")


def test_json_logs_have_an_access_line_per_call_and_never_a_secret_or_body(
        tmp_path: Path, fake: FakeUpstream) -> None:
    gw = start_gateway(tmp_path, fake.url, extra_env={
        "HELIOGRAPH_LOG_FORMAT": "json", "HELIOGRAPH_LOG_LEVEL": "info",
        "HELIOGRAPH_PROVIDER_KEY_OPENAI": SECRETS[0], "HELIOGRAPH_CUSTOM_PROVIDERS": "dead",
        "HELIOGRAPH_UPSTREAM_DEAD": f"http://127.0.0.1:{free_port()}"})
    ids = []
    try:
        # The gateway's own provider key; the client's own key; a key in the path; a dead upstream.
        r1 = httpx.post(gw.url + "/openai/v1/chat/completions", json=CHAT,
                        headers={**gw.auth, "Helicone-User-Id": "u-7", "Helicone-Property-Team": "ops"})
        r2 = httpx.post(gw.url + "/openai/v1/chat/completions?key=" + SECRETS[1], json={**CHAT, "stream": True},
                        headers={**gw.auth, "Authorization": f"Bearer {SECRETS[1]}"})
        r3 = httpx.post(f"{gw.url}/{gw.key}/openai/v1/chat/completions", json=CHAT)
        dead = httpx.post(gw.url + "/dead/v1/chat/completions", json=CHAT, headers=gw.auth)
        assert [r.status_code for r in (r1, r2, r3, dead)] == [200, 200, 200, 502]
        ids = [r.headers["helicone-id"] for r in (r1, r2, r3, dead)]
        for request_id in ids:
            gw.record(request_id)
    finally:
        gw.stop()
    log = gw.log()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]    # every line is JSON
    access = {line["id"]: line for line in lines if line["logger"] == "heliograph.access"}
    assert set(ids) <= set(access)
    first = access[ids[0]]
    assert first["level"] == "info" and first["message"] == "request"
    assert {"project": "default", "key": "tests", "provider": "openai", "model": "gpt-4o", "status": 200,
            "cache": "off", "retries": 0}.items() <= first.items()
    for field in ("latency_ms", "overhead_ms", "prompt_tokens", "completion_tokens", "cost_usd", "time"):
        assert first[field] is not None, field
    assert access[ids[1]]["streamed"] is True and access[ids[1]]["ttft_ms"] is not None
    assert access[ids[3]]["status"] == 502 and access[ids[3]]["error"] == "upstream_unavailable"
    warning = [line for line in lines if line["level"] == "warning" and ids[3] in line["message"]]
    assert warning and "Could not reach dead" in warning[0]["message"]
    assert any(line["logger"].startswith("uvicorn") for line in lines), "the web server's lines share the format"
    assert any(line["logger"] == "heliograph.banner" for line in lines)
    for secret in (*SECRETS, gw.key, gw.key[6:]):
        assert secret not in log, f"{secret[:12]}… is in the log"


def test_text_access_lines_and_turning_them_off(tmp_path: Path, fake: FakeUpstream) -> None:
    on = start_gateway(tmp_path, fake.url, extra_env={"HELIOGRAPH_LOG_LEVEL": "warning"}, db_name="on.db")
    try:
        r = httpx.post(on.url + "/openai/v1/chat/completions", json=CHAT, headers={**on.auth, "Authorization": "Bearer k"})
        on.record(r.headers["helicone-id"])
    finally:
        on.stop()
    line = next(l for l in on.log().splitlines() if "heliograph.access" in l)
    assert f"id={r.headers['helicone-id']} project=default key=tests" in line
    assert "provider=openai model=gpt-4o status=200" in line and "BODY-MARKER" not in on.log()

    off = start_gateway(tmp_path, fake.url, extra_env={"HELIOGRAPH_ACCESS_LOG": "false"}, db_name="off.db")
    try:
        r = httpx.post(off.url + "/openai/v1/chat/completions", json=CHAT, headers=off.auth)
        off.record(r.headers["helicone-id"])
    finally:
        off.stop()
    assert "heliograph.access" not in off.log() and "access lines off" in off.log()


def test_the_banner_masks_passwords_in_every_url() -> None:
    from heliograph.ops.banner import banner_lines
    from heliograph.settings import Settings
    settings = Settings(db_url="postgresql://hg:dbpw@db:5432/hg", redis_url="redis://:redispw@r:6379/0",
                        upstreams={"openai": "http://u:proxypw@egress:3128"}, provider_keys={"openai": "sk-held"})
    text = "\n".join(banner_lines(settings, 3))
    for secret in ("dbpw", "redispw", "proxypw", "sk-held"):
        assert secret not in text
    assert "store: postgresql://hg:****@db:5432/hg" in text and "provider keys held for: openai" in text


def test_access_lines_reach_stderr_in_writes_a_pipe_keeps_whole() -> None:
    """The writer process and the gateway share stderr: each write is whole lines, at most PIPE_BUF."""
    class Writes(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[str] = []

        def write(self, text: str) -> int:
            self.writes.append(text)
            return len(text)

    stream = Writes()
    handler = BatchedStreamHandler(stream)
    lines = [f"line {n} " + "x" * (n * 37 % 300) for n in range(200)]
    for line in lines:
        handler.emit(logging.makeLogRecord({"msg": line}))
    handler.flush()
    assert "".join(stream.writes).splitlines() == lines
    assert len(stream.writes) > 1 and all(len(w) <= select.PIPE_BUF and w.endswith("\n") for w in stream.writes)



def test_log_times_are_right_across_seconds_in_both_formats() -> None:
    """The time is rendered once a second (it was ~1 µs of each access line): each line still gets
    its own second and millisecond, in the text format's local time and the JSON format's UTC."""
    from heliograph.ops.logs import JsonFormatter, TextFormatter
    text, json_ = TextFormatter("%(asctime)s %(message)s"), JsonFormatter()
    start = 1_796_000_000.0
    for created in (start + 0.25, start + 0.75, start + 1.5, start - 3599.001, start + 0.25):
        record = logging.makeLogRecord({"msg": "m", "created": created, "msecs": created % 1 * 1000})
        local, utc = time.localtime(created), time.gmtime(created)
        millis = int(created % 1 * 1000)
        assert text.format(record) == f"{time.strftime('%Y-%m-%d %H:%M:%S', local)},{millis:03d} m"
        assert json.loads(json_.format(record))["time"] == f"{time.strftime('%Y-%m-%dT%H:%M:%S', utc)}.{millis:03d}Z"

# A worker that claims a core, holds it until told to exit, and says which one and where its threads run.
CLAIM = """
import os, sys, threading
from pathlib import Path
from heliograph.ops.tuning import claim_core
os.sched_setaffinity(0, map(int, sys.argv[2].split(",")))
threading.Thread(target=sys.stdin.readline, daemon=True).start()       # a thread started before the claim
core = claim_core(Path(sys.argv[1]), 2)
later = threading.Thread(target=sys.stdin.readline); later.start()      # and one after it
print(core, sorted({tuple(sorted(os.sched_getaffinity(int(t)))) for t in os.listdir("/proc/self/task")}), flush=True)
later.join()
"""


def test_workers_claim_a_core_each_and_a_restarted_worker_takes_the_one_left(tmp_path: Path) -> None:
    cores = sorted(os.sched_getaffinity(0))[:2]
    expected = [cores[0], cores[1 % len(cores)]]

    def worker() -> tuple[subprocess.Popen[str], str]:
        process = subprocess.Popen([sys.executable, "-c", CLAIM, str(tmp_path / "cores"), ",".join(map(str, cores))],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        return process, process.stdout.readline().strip()

    first, second = worker(), worker()
    assert [first[1], second[1]] == [f"{core} [({core},)]" for core in expected]     # every thread on it
    third = worker()                               # a third worker of two: no slot, left unpinned
    assert third[1] == f"None [{tuple(cores)}]"
    first[0].communicate("\n\n")                    # the first exits; a new worker gets its slot and core
    fourth = worker()
    assert fourth[1] == f"{expected[0]} [({expected[0]},)]"
    for process, _ in (second, third, fourth):
        process.communicate("\n\n")


@pytest.mark.parametrize(("cores", "workers", "pin", "expected"), [
    (2, 2, True, True),      # no core to spare: a core each
    (1, 2, True, True),      # more workers than cores: still pinned, two to the core
    (4, 2, True, False),     # cores to spare: unpinned, each with its writer process
    (2, 1, True, False),     # one worker: nothing to share
    (2, 2, False, False),    # turned off
])
def test_workers_are_pinned_only_where_no_core_is_to_spare(monkeypatch: pytest.MonkeyPatch, cores: int, workers: int,
                                                         pin: bool, expected: bool) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert Settings(workers=workers, pin_workers=pin).pinned_workers is expected
