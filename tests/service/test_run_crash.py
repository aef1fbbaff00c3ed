"""``vaultwatch run`` dying inside a compiled extension still leaves a trace (against the real
broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultwatch.demo.servers import KafkaBroker

from .test_worker import _create_topic

pytestmark = pytest.mark.integration


def test_a_native_crash_of_run_leaves_every_threads_stack(
    kafka_broker: KafkaBroker, topic: str, tmp_path: Path
) -> None:
    """A worker that dies inside a compiled extension (the soak once saw a SIGSEGV) prints where
    each thread was, so the crash can be debugged from the service's log."""
    import signal

    from .test_worker import _config, _start, _wait_for_log

    _create_topic(kafka_broker, topic, 1)
    cfg = _config(tmp_path, kafka_broker, topic, "g-crash", f"sqlite:///{tmp_path / 'v.db'}")
    proc = _start(cfg, tmp_path, "crash")
    try:
        _wait_for_log(tmp_path / "crash.log", "subscribed to", proc)
        proc.send_signal(signal.SIGSEGV)
        assert proc.wait(timeout=30) == -signal.SIGSEGV
    finally:
        if proc.poll() is None:
            proc.kill()
    text = (tmp_path / "crash.log").read_text(errors="replace")
    assert "Fatal Python error: Segmentation fault" in text
    assert "Thread 0x" in text and 'File "' in text  # every thread, with its frames
