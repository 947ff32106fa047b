"""The inference worker: one thread that runs the policy on the newest observation only (ROS-free).

The mailbox holds one (observation, instruction) pair; a newer submit replaces an older one that
has not started, so no queue grows while the model is slower than the camera. A call that raises,
returns an invalid chunk (vla_ros.core.types.validate_chunk) or runs longer than `max_inference_s`
reports a fault; the first call that succeeds in time afterwards reports the recovery.
vla_ros.runtime.process_worker runs the same loop with the policy in a child process.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from vla_ros.core.types import ActionChunk, Instruction, Observation, Policy, validate_chunk

CallResult = tuple[ActionChunk | None, str | None]  # (chunk, None) or (None, why it failed)


def run_policy(policy: Policy, observation: Observation, instruction: Instruction) -> CallResult:
    """One policy call, checked: (chunk stamped with the call's inputs, None) or (None, reason)."""
    try:
        chunk = policy.predict(observation, instruction)
    except Exception as exc:  # the policy is foreign code: every failure becomes a fault
        return None, f"policy raised {type(exc).__name__}: {exc}"
    if not isinstance(chunk, ActionChunk):
        return None, f"policy returned {type(chunk).__name__}, not an ActionChunk"
    reason = validate_chunk(chunk)
    if reason is not None:
        return None, f"invalid policy output: {reason}"
    if chunk.instruction != instruction.text or chunk.stamp != observation.stamp:
        # The chunk belongs to the call's inputs whatever the policy filled in.
        chunk = dataclasses.replace(chunk, instruction=instruction.text, stamp=observation.stamp)
    return chunk, None


ChunkCallback = Callable[[ActionChunk], None]
FaultCallback = Callable[["str | None"], None]  # reason, or None when the policy works again


@dataclass
class WorkerStats:
    """Counters of the worker, read by the node's status (plain ints and floats)."""

    calls_started: int = 0
    calls_ok: int = 0
    errors: int = 0  # raised, invalid output, or too slow
    timeouts: int = 0
    dropped: int = 0  # submissions replaced before they ran
    last_latency_s: float = 0.0
    last_error: str = ""


class InferenceWorker:
    """Runs `policy.predict` in a background thread on the newest submitted observation."""

    def __init__(self, policy: Policy | None, on_chunk: ChunkCallback, on_fault: FaultCallback,
                 max_inference_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 name: str = "vla-inference", nice: int = 0) -> None:
        self.policy = policy  # None in the process worker: the policy lives in the child
        self._on_chunk = on_chunk
        self._on_fault = on_fault
        self._max_s = float(max_inference_s)
        self._clock = clock
        self._name = name
        self._nice = nice
        self._cond = threading.Condition()
        self._slot: tuple[Observation, Instruction] | None = None
        self._call_started: float | None = None  # clock() when the running call began
        self._call_id = 0
        self._timed_out_call = -1  # id of the call the watchdog already reported
        self._faulted = False
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.stats = WorkerStats()

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the inference thread and its watchdog (idempotent)."""
        if self._threads:
            return
        self._stopping = False
        self._threads = [threading.Thread(target=self._run, name=self._name, daemon=True),
                         threading.Thread(target=self._watch, name=self._name + "-watchdog",
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop both threads; returns False when a policy call is still stuck (the thread is a daemon)."""
        with self._cond:
            self._stopping = True
            self._slot = None
            self._cond.notify_all()
        alive = False
        for t in self._threads:
            t.join(timeout_s)
            alive = alive or t.is_alive()
        self._threads = []
        return not alive

    # -- inputs -------------------------------------------------------------------------------
    def submit(self, observation: Observation, instruction: Instruction) -> None:
        """Offer the newest observation; replaces any pending one that has not started."""
        with self._cond:
            if self._slot is not None:
                self.stats.dropped += 1
            self._slot = (observation, instruction)
            self._cond.notify_all()

    def clear(self) -> None:
        """Drop the pending observation (e.g. the instruction became empty)."""
        with self._cond:
            self._slot = None

    def describe(self) -> str:
        """The policy's describe() for the status (a failing describe() is reported, not raised)."""
        try:
            return str(self.policy.describe())
        except Exception as exc:  # foreign code: the status still gets a line
            return f"{type(self.policy).__name__} (describe failed: {exc})"

    @property
    def faulted(self) -> bool:
        """True between a failed call and the next call that succeeds in time."""
        return self._faulted

    @property
    def busy_s(self) -> float:
        """How long the running call has been going [s]; 0 when idle."""
        started = self._call_started
        return 0.0 if started is None else max(0.0, self._clock() - started)

    # -- threads ------------------------------------------------------------------------------
    def _lower_priority(self) -> None:
        if self._nice > 0 and hasattr(os, "setpriority"):
            try:  # per-thread on Linux: the control thread wins the CPU when both want it
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
            except OSError:
                pass

    def _run(self) -> None:
        self._lower_priority()
        while True:
            with self._cond:
                while self._slot is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                observation, instruction = self._slot
                self._slot = None
            problem = self._prepare()
            if problem is not None:
                self._fail(problem)
                continue
            with self._cond:
                self._call_id += 1
                call_id = self._call_id
                self._call_started = started = self._clock()
                self.stats.calls_started += 1
                self._cond.notify_all()  # wake the watchdog
            chunk, error = self._call(observation, instruction)
            with self._cond:
                latency = self._clock() - started
                self._call_started = None
                reported_by_watchdog = self._timed_out_call == call_id
                self._cond.notify_all()
            self.stats.last_latency_s = latency
            if reported_by_watchdog:
                continue  # the fault is already reported; a late chunk is discarded
            if error is None and latency > self._max_s:
                self.stats.timeouts += 1
                error = f"policy call took {latency:.3f} s > max_inference_s {self._max_s:.3f} s"
            if error is not None:
                self._fail(error)
                continue
            self.stats.calls_ok += 1
            if self._faulted:
                self._faulted = False
                self._notify(self._on_fault, None)
            self._notify(self._on_chunk, chunk)

    def _notify(self, callback: Callable, arg: object) -> None:
        """Call a consumer callback; its own bugs must not stop the worker."""
        try:
            callback(arg)
        except Exception as exc:
            self.stats.last_error = f"callback {getattr(callback, '__name__', callback)} raised {exc!r}"

    def _prepare(self) -> str | None:
        """Get ready for a call, outside the timed part; returns why not (the process worker
        rebuilds a killed policy process here)."""
        return None

    def _call(self, observation: Observation, instruction: Instruction) -> CallResult:
        """One checked policy call (the process worker forwards it to its child)."""
        return run_policy(self.policy, observation, instruction)

    def _on_timeout(self) -> None:
        """Called by the watchdog after reporting a call past max_inference_s (the process worker
        kills its child here; a thread cannot be stopped, its late result is discarded)."""

    def _fail(self, reason: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = reason
        self._faulted = True
        self._notify(self._on_fault, reason)

    def _watch(self) -> None:
        """Report a call that runs past max_inference_s while it is still running (a hang)."""
        while True:
            with self._cond:
                if self._stopping:
                    return
                started, call_id = self._call_started, self._call_id
                if started is None or self._timed_out_call == call_id:
                    self._cond.wait()
                    continue
                remaining = started + self._max_s - self._clock()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self._timed_out_call = call_id
                self.stats.timeouts += 1
            self._fail(f"policy call running for more than max_inference_s {self._max_s:.3f} s "
                       "(hung or too slow)")
            self._on_timeout()
