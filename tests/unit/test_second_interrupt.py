"""A second Ctrl-C (or SIGTERM) exits at once with exit code 130 and says what it skipped."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

CHILD = """
import signal, sys, time
from s3sync import cli, interrupts
signal.signal(signal.SIGINT, cli.on_interrupt)
signal.signal(signal.SIGTERM, cli.on_interrupt)
with interrupts.deferred:      # the first signal waits for the end of this step
    print("ready", flush=True)
    time.sleep(60)
"""


def test_second_signal_exits_130_with_a_message() -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)  # let the first handler run (it only re-arms and defers)
        assert proc.poll() is None, "the first signal inside a deferred step must wait"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.startswith("error: interrupted again"), err
    assert "hint: " in err and "Traceback" not in err, err
