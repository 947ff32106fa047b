"""The demo's bag recorder: `vla-ros record` (vla_ros.ros.bag_record) in a child process.

SIGINT stops it, which closes the mcap bag atomically.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

from vla_ros.ros.demo_driver import GraphError, wait_until


class RecorderProcess:
    """`python -m vla_ros.ros.bag_record OUT --topics ...` in a child process; SIGINT stops it cleanly."""

    def __init__(self, out: str, topics: list[str], storage: str = "mcap", max_seconds: float = 0.0) -> None:
        """`max_seconds` > 0: the recorder stops by itself then (an orphan never records forever)."""
        self.out = out
        self.topics = list(topics)
        self.lines: list[str] = []
        cmd = [sys.executable, "-m", "vla_ros.ros.bag_record", out, "--topics", *self.topics,
               "--storage", storage, "--force", "--seconds", f"{max_seconds:g}"]
        # Its own session: a Ctrl-C at the terminal reaches the demo, which stops the recorder last.
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, name="vla-demo-recorder-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def recording(self) -> set[str]:
        """Topics the recorder has subscribed to so far."""
        prefix = "record: recording "
        return {line[len(prefix):].split(" [")[0] for line in list(self.lines) if line.startswith(prefix)}

    def wait_recording(self, topics: list[str], timeout_s: float) -> None:
        """Wait until the recorder records every topic in `topics` (GraphError when it does not)."""
        wanted = set(topics)
        ok = wait_until(lambda: wanted <= self.recording() or self.process.poll() is not None, timeout_s)
        if self.process.poll() is not None or not ok:
            missing = sorted(wanted - self.recording())
            raise GraphError(f"the bag recorder is not recording {missing}: " + self.tail())

    def tail(self, n: int = 8) -> str:
        return " | ".join(self.lines[-n:]) or "(no output)"

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGINT, then wait for the bag to be closed (GraphError when it fails)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5.0)
                raise GraphError(f"the bag recorder did not stop within {timeout_s:g} s: "
                                 f"{self.tail()}") from None
        self._reader.join(2.0)
        if self.process.returncode != 0:
            raise GraphError(f"the bag recorder failed (exit {self.process.returncode}): {self.tail()}")
