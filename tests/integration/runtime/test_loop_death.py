"""A consume loop that ends while the worker runs stops the worker, loudly: Faust's task runner
let a CancelledError end a task quietly, which would leave a worker that answers /readyz and reads
nothing. A fault hook cancels the intake loop from inside, as a leaking library cancellation would."""

from __future__ import annotations

import time

from tests.fix_servers import WorkerProcess


def test_a_cancelled_intake_loop_stops_the_worker(settings, tmp_path):
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.extra_env["LIFECYCLE_FAULT_CANCEL_INTAKE_AFTER_S"] = "3"
    try:
        worker.spawn()
        end = time.monotonic() + 60
        while worker.alive() and time.monotonic() < end:
            time.sleep(0.2)
        log = worker.log_path.read_text(errors="replace")
        assert not worker.alive(), "the worker kept running without its intake loop"
        assert "ended while the worker runs (cancelled from inside)" in log
        assert worker.proc is not None and worker.proc.returncode != 0, "a crash must not look like a clean stop"
    finally:
        worker.stop()
