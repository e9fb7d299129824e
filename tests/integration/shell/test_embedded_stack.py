"""The embedded stack stops with its parent, even a parent killed with SIGKILL, and the next
start replaces what a dead run left."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psycopg
import pytest

from lifecycle.core.config import PROJECT_ROOT, Settings
from lifecycle.core.errors import StackError
from lifecycle.embedded import Stack
from lifecycle.embedded.process import Ledger, pid_alive, stop_process
from tests.procs import processes_marked, wait_until_gone

STARTER = textwrap.dedent(
    """
    import json, sys, time
    from lifecycle.core.config import Settings
    from lifecycle.embedded import Stack
    stack = Stack(Settings.from_env({"LIFECYCLE_STATE_DIR": sys.argv[1], "LIFECYCLE_EMBEDDED_PG_FAST": "true"}))
    info = stack.start()
    print(json.dumps({"broker": stack.broker.proc.pid, "postgres": stack.postgres.proc.pid,
                      "dsn": info.settings.postgres_dsn}), flush=True)
    time.sleep(600)
    """
)


def _start_in_child(state):
    proc = subprocess.Popen([sys.executable, "-c", STARTER, str(state)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "LIFECYCLE_MARK": str(state)})
    line = proc.stdout.readline()
    proc.stdout.close()
    assert line, "the child did not start its stack"
    return proc, json.loads(line)


def test_servers_die_with_a_killed_parent_and_the_next_start_reuses_the_data(tmp_path):
    state = tmp_path / "state"
    parent, pids = _start_in_child(state)
    try:
        with psycopg.connect(pids["dsn"], autocommit=True) as conn:
            conn.execute("CREATE TABLE survivor (v int)")
            conn.execute("INSERT INTO survivor VALUES (42)")
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        end = time.monotonic() + 30
        while (pid_alive(pids["broker"]) or pid_alive(pids["postgres"])) and time.monotonic() < end:
            time.sleep(0.1)
        assert not pid_alive(pids["broker"]), "broker outlived its parent"
        assert not pid_alive(pids["postgres"]), "postgres outlived its parent"

        with Stack(Settings.from_env({"LIFECYCLE_STATE_DIR": str(state)})) as info:
            with psycopg.connect(info.settings.postgres_dsn) as conn:
                assert conn.execute("SELECT v FROM survivor").fetchone() == (42,)
    finally:
        stop_process(parent, signal.SIGKILL, timeout_s=1)
        assert wait_until_gone(str(state)) == []


def test_leftovers_of_a_dead_run_are_replaced(tmp_path):
    state = tmp_path / "state"
    orphan = subprocess.Popen(["sleep", "300"], start_new_session=True)
    dead_owner = subprocess.Popen(["true"])
    dead_owner.wait()
    Ledger(state / "run" / "ledger.json").write(
        {"owner": dead_owner.pid, "children": [{"pid": orphan.pid, "cmd": "sleep 300", "stop_signal": 15}]}
    )
    try:
        with Stack(Settings.from_env({"LIFECYCLE_STATE_DIR": str(state)})):
            orphan.wait(10)  # reaped by the new start
        assert orphan.returncode == -signal.SIGTERM
    finally:
        stop_process(orphan, signal.SIGKILL, timeout_s=1)


def test_a_live_run_is_not_disturbed(tmp_path):
    state = tmp_path / "state"
    parent, _ = _start_in_child(state)
    try:
        with pytest.raises(StackError, match="another lifecycle run"):
            Stack(Settings.from_env({"LIFECYCLE_STATE_DIR": str(state)})).start()
        assert parent.poll() is None
    finally:
        stop_process(parent, signal.SIGTERM, timeout_s=10)
        assert wait_until_gone(str(state)) == []
    assert processes_marked(str(state)) == []


# Run in a process of its own: the SIGINT raised inside Python's at-fork handlers must reach the
# thread that spawns, and a test runner's other threads (pytest-xdist's) would take it instead.
SPAWNER = textwrap.dedent(
    """
    import os, signal, sys, time
    from lifecycle.embedded.process import spawn
    log = open(sys.argv[1], "wb")
    child = spawn(["sleep", "30"], log=log)
    time.sleep(0.2)
    os.kill(child.pid, signal.SIGTERM)
    print("sigterm", child.wait(5), flush=True)  # SIGTERM is not blocked in the child
    interrupt = []
    os.register_at_fork(after_in_parent=lambda: interrupt and os.kill(os.getpid(), signal.SIGINT))
    interrupt.append(True)
    try:
        spawn(["sleep", "30", sys.argv[2]], log=log)
        print("no interrupt", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    """
)


def test_a_ctrl_c_during_spawn_is_delivered_and_children_do_not_inherit_the_mask(tmp_path):
    marker = f"spawn-interrupted-{os.getpid()}"
    done = subprocess.run([sys.executable, "-c", SPAWNER, str(tmp_path / "child.log"), marker],
                          capture_output=True, text=True, timeout=60, cwd=str(PROJECT_ROOT))
    assert done.returncode == 0, done.stderr
    # Ctrl-C arriving inside Python's at-fork handlers is swallowed unless spawn holds it back.
    assert done.stdout.split("\n")[:2] == [f"sigterm {-signal.SIGTERM}", "interrupted"], done.stdout
    time.sleep(0.2)
    assert processes_marked(marker) == []  # the child the caller never saw is gone


def test_the_embedded_postgres_needs_its_password_and_an_old_trusting_folder_is_moved_over(tmp_path):
    """No local user reads the data by reaching the port (issue 18): a connection without the
    password is refused. A data folder made when every connection was trusted gets a password at
    its next start."""
    from lifecycle.embedded.postgres import EmbeddedPostgres

    pg = EmbeddedPostgres(tmp_path / "pgdata", tmp_path / "pg.log", fast=True)
    pg.start()
    try:
        assert pg.password_file.stat().st_mode & 0o777 == 0o600
        psycopg.connect(pg.dsn(), connect_timeout=5).close()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/lifecycle", connect_timeout=5).close()
    finally:
        pg.stop()
    hba = tmp_path / "pgdata" / "pg_hba.conf"  # as initdb --auth=trust left it
    with open(hba, "r+") as out:
        text = out.read().replace("scram-sha-256", "trust")
        out.seek(0)
        out.write(text)
        out.truncate()
    pg.password_file.unlink()
    pg = EmbeddedPostgres(tmp_path / "pgdata", tmp_path / "pg.log", fast=True)
    pg.start()
    try:
        psycopg.connect(pg.dsn(), connect_timeout=5).close()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(f"postgresql://postgres:wrong@127.0.0.1:{pg.port}/lifecycle", connect_timeout=5).close()
    finally:
        pg.stop()
