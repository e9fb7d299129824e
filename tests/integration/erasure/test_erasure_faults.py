"""Erasures survive SIGKILL: of a connector between its delete and its acknowledgement, and of the
orchestrating worker in the middle of a fan-out, again and again."""

from __future__ import annotations

import random
import time

from tests.fix_servers import ChildProcess
from tests.helpers import HOUR, T0, event, metric, wait_for
from tests.integration.erasure.test_erasure import _complete, _emit, _sweep_postgres

ROUNDS = 10


def _account(settings, name):
    folder = settings.files_dir / name
    folder.mkdir(parents=True)
    (folder / "doc.txt").write_text("data")
    return [event("account.registered", T0, account=name, email=f"{name}@example.test", first_name="F",
                  last_name="L"),
            event("session.started", T0 + 1, account=name, session_id=f"{name}-s", ip="198.51.100.50",
                  login_method="password")]


def test_connector_killed_between_delete_and_ack_every_time(settings, worker, connectors, tmp_path):
    markers = tmp_path / "fault-markers"
    markers.mkdir()
    connectors["files"].stop()
    faulty = ChildProcess(settings, tmp_path / "connector-files-faulty.log", ["connector", "files"],
                          {"LIFECYCLE_FAULT_AFTER_ERASE_DIR": str(markers)})
    names = [f"acc-ck{i}" for i in range(ROUNDS)]
    try:
        for name in names:
            _emit(settings, *_account(settings, name))
        faulty.spawn()
        for i, name in enumerate(names):
            _emit(settings, event("account.closed", T0 + HOUR, account=name))
            # The connector erases, then dies before acknowledging: once per order.
            wait_for(lambda: not faulty.alive(), deadline_s=60, what=f"the kill after erasing {name}")
            assert not (settings.files_dir / name).exists()
            assert len(list(markers.iterdir())) >= i + 1
            faulty.spawn()
        for name in names:
            answer = wait_for(lambda n=name: _complete(worker, n), deadline_s=90, what=f"erasure of {name}")
            files = {s["store"]: s for s in answer["erasures"][0]["stores"]}["files"]
            # The redelivered order found its receipt: the first run's count, not "nothing".
            assert (files["status"], files["items_erased"]) == ("erased", 1)
    finally:
        faulty.stop()
    assert len(list(markers.iterdir())) == ROUNDS


def test_orchestrator_killed_mid_fan_out_every_time(settings, worker, connectors):
    names = [f"acc-ok{i}" for i in range(ROUNDS)]
    for name in names:
        _emit(settings, *_account(settings, name))
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_ingested_total") >= 2 * ROUNDS,
             what="the accounts")
    rng = random.Random(4)
    for name in names:
        _emit(settings, event("account.closed", T0 + HOUR, account=name))
        time.sleep(rng.uniform(0.0, 1.0))
        worker.kill()
        worker.start()
    for name in names:
        answer = wait_for(lambda n=name: _complete(worker, n), deadline_s=120, what=f"erasure of {name}")
        assert {s["store"] for s in answer["erasures"][0]["stores"]} == set(settings.erasure_stores)
    assert _sweep_postgres(settings, names) == []
    assert not any((settings.files_dir / n).exists() for n in names)
