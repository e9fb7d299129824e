"""The `lifecycle` command as a user runs it: demo, up (Ctrl-C, SIGTERM, a killed parent), and
topics apply. Every run gets its own state folder, and afterwards no process of it is left."""

import os
import signal
import subprocess
import sys
import time

import yaml

from lifecycle.embedded.process import free_port, stop_process
from lifecycle.supervisor import http_get
from tests.procs import wait_until_gone


def _env(state, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env.update({"LIFECYCLE_STATE_DIR": str(state), "LIFECYCLE_HTTP_PORT": str(free_port())})
    env.update(extra)
    return env


def _lifecycle(*args):
    return [sys.executable, "-m", "lifecycle", *args]


def _wait_ready(env, proc, deadline_s=90):
    url = f"http://127.0.0.1:{env['LIFECYCLE_HTTP_PORT']}/readyz"
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert proc.poll() is None, "lifecycle up exited while starting"
        try:
            if http_get(url, timeout_s=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError("lifecycle up never became ready")


def test_demo_runs_on_the_embedded_stack_twice_and_leaves_nothing_running(tmp_path):
    state = tmp_path / "state"
    try:
        for run in (1, 2):  # a second run starts from nothing too
            done = subprocess.run(_lifecycle("demo", "--accounts", "30", "--visitors", "30"), env=_env(state),
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "embedded broker on 127.0.0.1:" in done.stdout
            assert "embedded PostgreSQL on 127.0.0.1:" in done.stdout
            assert "== report ==" in done.stdout
            assert ": OK" in done.stdout
            assert ("cleared the previous demo's state" in done.stdout) == (run == 2)
            for log in ("broker.log", "postgres.log", "worker.log"):
                assert (state / "demo" / "logs" / log).exists()
            tokens = state / "demo" / "secrets" / "http-tokens"  # no token configured: one per scope made
            assert [line.split()[0] for line in tokens.read_text().splitlines()] == ["ingest", "read", "keys"]
            assert tokens.stat().st_mode & 0o777 == 0o600
            _metrics_hold_the_catalogue_and_no_personal_data((state / "demo" / "demo-metrics.txt").read_text())
            assert wait_until_gone(str(state)) == []
    finally:
        assert wait_until_gone(str(state)) == []


def _metrics_hold_the_catalogue_and_no_personal_data(text):
    import re

    from prometheus_client.parser import text_string_to_metric_families

    from lifecycle.core.config import PROJECT_ROOT

    catalogue = set(re.findall(r"^\| `(lifecycle_[a-z_]+)`", (PROJECT_ROOT / "docs" / "observability.md").read_text(),
                               flags=re.M))
    assert len(catalogue) > 25
    assert [name for name in sorted(catalogue) if name not in text] == [], "catalogue metrics missing"
    values = {v for family in text_string_to_metric_families(text) for sample in family.samples
              for v in sample.labels.values()}
    # What the demo's subjects carry: account, visitor and session ids, addresses, names, phones, IPs.
    personal = re.compile(r"acc-|vis-|sess-|@|Given|Family|\+336|203\.0\.113\.|192\.0\.2\.")
    assert [v for v in values if personal.search(v)] == []


def test_up_stops_cleanly_on_ctrl_c_and_sigterm(tmp_path):
    state = tmp_path / "state"
    env = _env(state)
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with open(tmp_path / f"up-{sig.name}.log", "wb") as out:
                up = subprocess.Popen(_lifecycle("up"), env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                _wait_ready(env, up)
                port = env["LIFECYCLE_HTTP_PORT"]
                assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
                status, body = http_get(f"http://127.0.0.1:{port}/metrics")
                assert status == 200 and b"lifecycle_events_ingested_total" in body
                up.send_signal(sig)
                assert up.wait(60) in (0, 128 + sig, 130)
            finally:
                stop_process(up, signal.SIGKILL, timeout_s=1)
            assert wait_until_gone(str(state)) == [], f"processes left after {sig.name}"
    finally:
        assert wait_until_gone(str(state), deadline_s=5) == []


def test_up_killed_with_sigkill_takes_its_children_and_restarts(tmp_path):
    state = tmp_path / "state"
    env = _env(state)
    try:
        up = subprocess.Popen(_lifecycle("up"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_ready(env, up)
        up.send_signal(signal.SIGKILL)
        up.wait(10)
        assert wait_until_gone(str(state)) == [], "children outlived a killed `lifecycle up`"

        again = subprocess.Popen(_lifecycle("up"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_ready(env, again)
            time.sleep(3)  # connectors joining their groups while we stop
        finally:
            again.send_signal(signal.SIGINT)
            try:
                assert again.wait(60) in (0, 130)
            finally:
                stop_process(again, signal.SIGKILL, timeout_s=1)
    finally:
        assert wait_until_gone(str(state)) == []


def test_topics_apply_twice_and_drift(servers, tmp_path):
    env = _env(tmp_path / "state", LIFECYCLE_KAFKA_BOOTSTRAP=servers.kafka_bootstrap,
               LIFECYCLE_TOPIC_PREFIX="cli-apply.")
    first = subprocess.run(_lifecycle("topics", "apply"), env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "15 created, 0 already present" in first.stdout
    assert "created cli-apply.tombstones" in first.stdout
    second = subprocess.run(_lifecycle("topics", "apply", "--strict"), env=env, capture_output=True, text=True,
                            timeout=60)
    assert second.returncode == 0
    assert "0 created, 15 already present" in second.stdout and "no drift" in second.stdout

    spec = yaml.safe_load(servers.topic_spec.read_text())
    spec["topics"]["consent-events"]["partitions"] = 6
    spec["policy"] = str(servers.retention_policy)
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump(spec))
    third = subprocess.run(_lifecycle("topics", "apply", "--strict"), env={**env, "LIFECYCLE_TOPIC_SPEC": str(path)},
                           capture_output=True, text=True, timeout=60)
    assert third.returncode == 2
    assert "drift: cli-apply.consent-events: partitions 4 on the broker, 6 in the spec" in third.stdout


def test_worker_without_a_broker_says_what_to_do(tmp_path):
    done = subprocess.run(_lifecycle("worker"), env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "LIFECYCLE_KAFKA_BOOTSTRAP" in done.stderr


def test_keys_init_creates_the_configured_key_files(tmp_path):
    """What compose's one-shot `hash-key` service runs: the files the environment names (hash key,
    master key, HTTP tokens) are created (mode 0600), and a second run keeps them."""
    roles = tmp_path / "secrets" / "postgres-roles"
    files = [tmp_path / "secrets" / name for name in ("hash.key", "master.key", "http-tokens")] + [
        roles / f"{c}.password" for c in ("worker", "reader", "store-postgres", "store-mailing-list")]
    env = _env(tmp_path / "state", LIFECYCLE_HASH_KEY_FILE=str(files[0]), LIFECYCLE_MASTER_KEY_FILE=str(files[1]),
               LIFECYCLE_HTTP_TOKENS_FILE=str(files[2]), LIFECYCLE_POSTGRES_ROLES_DIR=str(roles))
    first = subprocess.run(_lifecycle("keys", "init"), env=env, capture_output=True, timeout=60)
    assert first.returncode == 0, first.stderr.decode()
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    assert [line.split()[0] for line in files[2].read_text().splitlines()] == ["ingest", "read", "keys"]
    before = [f.read_bytes() for f in files]
    again = subprocess.run(_lifecycle("keys", "init"), env=env, capture_output=True, timeout=60)
    assert again.returncode == 0 and [f.read_bytes() for f in files] == before
