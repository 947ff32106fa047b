"""The inference worker: one thread that runs the policy on the newest observation only (ROS-free).

The mailbox holds one (observation, instruction) pair; a newer submit replaces an older one that
has not started, so no queue grows while the model is slower than the camera. A call that raises,
returns an invalid chunk (vla_ros.core.types.validate_chunk) or runs longer than `max_inference_s`
reports a fault; the first call that succeeds in time afterwards reports the recovery.

ProcessInferenceWorker has the same interface but runs the policy in a child process: the caller's
threads (the ROS control timer) never wait for the policy's GIL, and a hung policy is killed and
rebuilt instead of abandoned.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from vla_ros.core.types import ActionChunk, Instruction, Observation, Policy, validate_chunk


def check_policy_output(chunk: object, observation: Observation, instruction: Instruction
                        ) -> tuple[ActionChunk | None, str | None]:
    """(chunk, None) for a valid chunk, stamped with the call's inputs; (None, reason) otherwise."""
    if not isinstance(chunk, ActionChunk):
        return None, f"policy returned {type(chunk).__name__}, not an ActionChunk"
    reason = validate_chunk(chunk)
    if reason is not None:
        return None, f"invalid policy output: {reason}"
    if chunk.instruction != instruction.text or chunk.stamp != observation.stamp:
        # The chunk belongs to the call's inputs whatever the policy filled in.
        chunk = dataclasses.replace(chunk, instruction=instruction.text, stamp=observation.stamp)
    return chunk, None


def run_policy(policy: Policy, observation: Observation, instruction: Instruction
               ) -> tuple[ActionChunk | None, str | None]:
    """One synchronous policy call, checked as the worker checks it: (chunk, None) or (None, reason)."""
    try:
        chunk = policy.predict(observation, instruction)
    except Exception as exc:  # the policy is foreign code: every failure becomes a fault
        return None, f"policy raised {type(exc).__name__}: {exc}"
    return check_policy_output(chunk, observation, instruction)


class PolicyProcessError(RuntimeError):
    """The policy process reported an error or died; the message says which."""


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

    def __init__(self, policy: Policy, on_chunk: ChunkCallback, on_fault: FaultCallback,
                 max_inference_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 name: str = "vla-inference", nice: int = 0) -> None:
        self._policy = policy
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

    def _predict(self, observation: Observation, instruction: Instruction) -> object:
        """The policy call itself (the process worker overrides it)."""
        return self._policy.predict(observation, instruction)

    def _call(self, observation: Observation, instruction: Instruction
              ) -> tuple[ActionChunk | None, str | None]:
        """One policy call; returns (chunk, None) or (None, reason)."""
        try:
            chunk = self._predict(observation, instruction)
        except PolicyProcessError as exc:
            return None, str(exc)
        except Exception as exc:  # the policy is foreign code: every failure becomes a fault
            return None, f"policy raised {type(exc).__name__}: {exc}"
        return check_policy_output(chunk, observation, instruction)

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


# ----- the policy in its own process --------------------------------------------------------------
def _policy_process_main(conn, factory: Callable[[], Policy], nice: int) -> None:  # noqa: ANN001
    """Child process: build the policy, then answer (observation, instruction) requests."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    if nice > 0:
        try:
            os.nice(nice)
        except OSError:
            pass
    try:
        policy = factory()
        conn.send(("ready", str(policy.describe())))
    except Exception as exc:
        conn.send(("fatal", f"building the policy failed: {type(exc).__name__}: {exc}"))
        return
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        observation, instruction = request
        try:
            reply = ("ok", policy.predict(observation, instruction))
        except Exception as exc:
            reply = ("error", f"policy raised {type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except Exception as exc:  # e.g. an unpicklable result
            conn.send(("error", f"policy result cannot be sent back: {exc!r}"))


class ProcessInferenceWorker(InferenceWorker):
    """InferenceWorker whose policy runs in a child process (multiprocessing, spawn).

    The node's control thread then never waits for the GIL of a busy policy, and a hung policy is
    killed and rebuilt instead of being abandoned. `factory` must be picklable (a module-level
    function or a functools.partial of one, e.g. partial(make_policy, cfg.policy)); it is called in
    the child. `start()` waits up to `start_timeout_s` for the child to build the policy.
    """

    def __init__(self, factory: Callable[[], Policy], on_chunk: ChunkCallback, on_fault: FaultCallback,
                 max_inference_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 name: str = "vla-inference", nice: int = 0, start_timeout_s: float = 120.0) -> None:
        super().__init__(None, on_chunk, on_fault, max_inference_s, clock, name, nice=0)  # type: ignore[arg-type]
        self._factory = factory
        self._child_nice = nice
        self._start_timeout_s = start_timeout_s
        self._process = None
        self._conn = None
        self._proc_lock = threading.Lock()
        self.description = ""
        self.restarts = 0

    def start(self) -> None:
        """Start the policy process (raises PolicyProcessError when it cannot build the policy)."""
        self._spawn()
        super().start()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop the threads and the policy process."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._kill(graceful=True)
        return super().stop(timeout_s)

    def _spawn(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        process = ctx.Process(target=_policy_process_main, args=(child, self._factory, self._child_nice),
                              name=self._name + "-process", daemon=True)
        process.start()
        child.close()
        if not parent.poll(self._start_timeout_s):
            process.kill()
            raise PolicyProcessError(f"the policy process did not start within {self._start_timeout_s:g} s")
        try:
            kind, text = parent.recv()
        except (EOFError, OSError) as exc:
            process.kill()
            raise PolicyProcessError(f"the policy process died while starting: {exc!r}") from exc
        if kind != "ready":
            process.join(1.0)
            raise PolicyProcessError(text)
        with self._proc_lock:
            self._process, self._conn = process, parent
        self.description = text

    def _kill(self, graceful: bool = False) -> None:
        with self._proc_lock:
            process, conn = self._process, self._conn
            self._process = self._conn = None
        if process is None:
            return
        if graceful:
            try:
                conn.send(None)
                process.join(0.5)
            except (OSError, ValueError):
                pass
        if process.is_alive():
            process.kill()
        process.join(1.0)
        conn.close()

    def _on_timeout(self) -> None:
        self._kill()  # the blocked _predict sees the pipe close and returns

    def _prepare(self) -> str | None:
        with self._proc_lock:
            alive = self._conn is not None
        if alive or self._stopping:
            return None
        self.restarts += 1  # killed after a hang, or died: build a new one
        try:
            self._spawn()
        except PolicyProcessError as exc:
            return f"restarting the policy process failed: {exc}"
        return None

    def _predict(self, observation: Observation, instruction: Instruction) -> object:
        with self._proc_lock:
            conn = self._conn
        if conn is None:
            raise PolicyProcessError("the policy process is not running")
        try:
            conn.send((observation, instruction))
            while not conn.poll(0.05):
                if self._stopping or self._conn is not conn:
                    raise PolicyProcessError("the policy process was stopped during the call")
            kind, payload = conn.recv()
        except (EOFError, OSError, ValueError) as exc:
            self._kill()
            raise PolicyProcessError(f"the policy process died during the call ({exc!r})") from exc
        if kind != "ok":
            raise PolicyProcessError(payload)
        return payload
