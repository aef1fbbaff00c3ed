"""Engines restored on several threads at once, in a fresh interpreter, must not crash it.

msgspec builds a type's decoding information the first time it decodes that type. Two threads
doing so at once for the engine's nested state structs crashed the interpreter (SIGSEGV): a soak's
worker died when its stage-1 and stage-2 threads restored their engines together at start-up.
The decoders are now built when their modules are imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from detect.engine import Engine

from .conftest import Scenario

_RACE = """
import sys, threading
blob = open(sys.argv[1], "rb").read()
from detect.engine import Engine
gate = threading.Barrier(3)
def restore():
    gate.wait()
    Engine(seed=0).restore(blob)
threads = [threading.Thread(target=restore) for _ in range(3)]
for t in threads: t.start()
for t in threads: t.join()
print("restored")
"""


def test_engines_restored_on_three_threads_at_once_do_not_crash(
    bao_scenario: Scenario, tmp_path: Path
) -> None:
    engine = Engine(seed=0)
    for ev in bao_scenario.all():
        engine.process(ev)
    blob = tmp_path / "state.bin"
    blob.write_bytes(engine.snapshot())
    script = tmp_path / "race.py"
    script.write_text(_RACE)
    root = str(Path(__file__).resolve().parents[2])
    # Before the fix, half of such fresh interpreters died: 8 in a row pass by chance 1 time in 256.
    for attempt in range(8):
        proc = subprocess.run(
            [sys.executable, str(script), str(blob)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=root,
            env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"},
        )
        assert proc.returncode == 0 and "restored" in proc.stdout, (
            attempt,
            proc.returncode,
            proc.stderr[-2000:],
        )
