"""ProcessInferenceWorker: the inference worker with its policy in a child process (ROS-free).

The caller's threads (the ROS control timer) never wait for the policy's GIL, and a hung policy is
killed and rebuilt instead of abandoned. The child answers each (observation, instruction) with
the result of `run_policy`, so a call is checked exactly as in the thread worker.

Camera frames are decoded in the parent's worker thread (InferenceWorker._run), not in the child:
a damaged frame is counted in the parent like in the thread worker and never crosses to the model's
process, and the child stays free of image codecs (the decoders release the GIL while they run).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable

from vla_ros.core.types import (
    Instruction,
    InstructionCheck,
    Observation,
    Policy,
    PolicyInputs,
    instruction_check,
    policy_inputs,
)
from vla_ros.runtime.worker import (
    CallResult,
    ChunkCallback,
    FaultCallback,
    InferenceWorker,
    RejectCallback,
    policy_input_size,
    run_policy,
)


class PolicyProcessError(RuntimeError):
    """The policy process could not build the policy or did not start; the message says why."""


def _policy_process_main(conn, factory: Callable[[], Policy], nice: int) -> None:  # noqa: ANN001
    """Child process: build the policy, then answer (observation, instruction) requests."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    if nice > 0:
        try:
            os.nice(nice)
        except OSError:
            pass
    try:
        policy = factory()
        conn.send(("ready", str(policy.describe()), policy_input_size(policy), _sendable_check(policy),
                   policy_inputs(policy)))
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
            conn.send(run_policy(policy, observation, instruction))
        except Exception as exc:  # e.g. an unpicklable result
            conn.send((None, f"policy result cannot be sent back: {exc!r}"))


def _sendable_check(policy: Policy) -> InstructionCheck | None:
    """The policy's check_instruction when it can be sent to the parent (else None: accept all)."""
    check = instruction_check(policy)
    try:
        pickle.dumps(check)
    except Exception:  # e.g. a bound method of a policy holding a lock or a model
        return None
    return check


class ProcessInferenceWorker(InferenceWorker):
    """InferenceWorker whose policy runs in a child process (multiprocessing, spawn).

    `factory` must be picklable (a module-level function or a functools.partial of one, e.g.
    partial(make_policy, cfg.policy)); it is called in the child. `start()` waits up to
    `start_timeout_s` for the child to build the policy.
    """

    def __init__(self, factory: Callable[[], Policy], on_chunk: ChunkCallback, on_fault: FaultCallback,
                 max_inference_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 name: str = "vla-inference", nice: int = 0, start_timeout_s: float = 120.0,
                 on_reject: RejectCallback | None = None) -> None:
        super().__init__(None, on_chunk, on_fault, max_inference_s, clock, name, nice=0, on_reject=on_reject)
        self._factory = factory
        self._child_nice = nice
        self._start_timeout_s = start_timeout_s
        self._process = None
        self._conn = None
        self._proc_lock = threading.Lock()
        self.description = ""
        self._input_size: int | None = None
        self._check: InstructionCheck | None = None  # the child policy's, sent when it started
        self._inputs = PolicyInputs()  # the child policy's, sent when it started
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

    def describe(self) -> str:
        """The child policy's describe(), as it reported it when it started."""
        return self.description

    @property
    def input_size(self) -> int | None:
        """The child policy's model input side, as it reported it when it started."""
        return self._input_size

    @property
    def instruction_check(self) -> InstructionCheck | None:
        """The child policy's check_instruction, as it sent it when it started (None: accept all)."""
        return self._check

    @property
    def inputs(self) -> PolicyInputs:
        """The child policy's cameras, proprio length and chunk, as it sent them when it started."""
        return self._inputs

    def _spawn(self) -> None:
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
            kind, text, *rest = parent.recv()  # ("ready", describe, size, check, inputs) / ("fatal", why)
        except (EOFError, OSError) as exc:
            process.kill()
            raise PolicyProcessError(f"the policy process died while starting: {exc!r}") from exc
        if kind != "ready":
            process.join(1.0)
            raise PolicyProcessError(text)
        with self._proc_lock:
            self._process, self._conn = process, parent
        self.description = text
        self._input_size = rest[0] if rest else None
        self._check = rest[1] if len(rest) > 1 else None
        self._inputs = rest[2] if len(rest) > 2 else PolicyInputs()

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
        self._kill()  # the blocked _call sees the pipe close and returns

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

    def _call(self, observation: Observation, instruction: Instruction) -> CallResult:
        """Send the call to the child and wait for its checked result."""
        with self._proc_lock:
            conn = self._conn
        if conn is None:
            return None, "the policy process is not running"
        try:
            conn.send((observation, instruction))
            while not conn.poll(0.05):
                if self._stopping or self._conn is not conn:
                    return None, "the policy process was stopped during the call"
            return conn.recv()
        except (EOFError, OSError, ValueError) as exc:
            self._kill()
            return None, f"the policy process died during the call ({exc!r})"
        except Exception as exc:  # e.g. an observation that cannot be pickled
            return None, f"policy call failed: {type(exc).__name__}: {exc}"
