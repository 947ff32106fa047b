"""ControlTimer: vla_node's control timer on a hidden helper node with its own executor and thread.

Nothing that the main node's executor runs (camera decoding, services, status) can delay it. The
main node's clock drives the timer, so use_sim_time (/clock) applies to it too. With `priority`
> 0 the thread asks for SCHED_FIFO scheduling; where that is refused it keeps normal scheduling
and says once per process, with a warning, how to grant it. Starting the timer also freezes the
objects made so far (gc.freeze: a full collection of a node process takes ~10 ms, held under the GIL
the control thread needs), so that no collection walks them while the loop runs.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, ShutdownException, SingleThreadedExecutor
from rclpy.node import Node

# Said once per process: a node activated again (or a second node) stays quiet about it.
_priority_warned = False
_warn_lock = threading.Lock()

HOW_TO_GRANT = ("grant it with an rtprio limit (`ulimit -r 99` in the shell that starts the node, or "
                "'<user> - rtprio 99' in /etc/security/limits.conf; docker: --ulimit rtprio=99) or "
                "CAP_SYS_NICE (docker: --cap-add SYS_NICE), or set execution.control_priority: 0 to "
                "run without it")


def set_realtime_priority(priority: int) -> str | None:
    """SCHED_FIFO `priority` for the calling thread; None on success, else why it was refused."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))  # 0: the calling thread
    except AttributeError:
        return "this platform has no SCHED_FIFO"
    except OSError as exc:
        return f"{exc.strerror or exc}"
    return None


def realtime_refusal(priority: int) -> str | None:
    """Whether this process may give a thread SCHED_FIFO `priority`: None if so, else why not (tried
    in a short-lived thread of its own)."""
    result: list[str | None] = []
    probe = threading.Thread(target=lambda: result.append(set_realtime_priority(priority)), daemon=True)
    probe.start()
    probe.join()
    return result[0] if result else "the probe thread failed"


def _warn_once(node: Node, message: str) -> None:
    global _priority_warned
    with _warn_lock:
        first, _priority_warned = not _priority_warned, True
    if first:
        node.get_logger().warning(message)
    else:
        node.get_logger().debug(message)


class ControlTimer:
    """A timer calling `callback` every `period_s` in a thread of its own; start() once, stop() once."""

    def __init__(self, owner: Node, period_s: float, callback: Callable[[], None], priority: int = 0) -> None:
        self._owner = owner
        self._priority = priority
        self._node = rclpy.create_node(f"_{owner.get_name()}_control", namespace=owner.get_namespace(),
                                       context=owner.context, use_global_arguments=False,
                                       start_parameter_services=False, enable_rosout=False)
        self._node.create_timer(period_s, callback, clock=owner.get_clock())
        self._executor = SingleThreadedExecutor(context=owner.context)
        self._executor.add_node(self._node)
        self._thread = threading.Thread(target=self._main, name="vla-control", daemon=True)
        self.realtime = False  # True once the thread runs with SCHED_FIFO

    def start(self) -> None:
        """Freeze the objects made so far (start-up is over) and start the timer's thread."""
        gc.collect()
        gc.freeze()  # the collector never walks the policy, messages and modules built at start-up
        self._thread.start()

    def stop(self) -> None:
        """Stop the executor, join the thread (up to 2 s), destroy the helper node and unfreeze the
        objects (what a cleanup releases stays collectable)."""
        self._executor.shutdown(timeout_sec=1.0)
        if self._thread.ident is not None:
            self._thread.join(2.0)
        self._node.destroy_node()
        gc.unfreeze()

    def _main(self) -> None:
        if self._priority > 0:
            refused = set_realtime_priority(self._priority)
            self.realtime = refused is None
            if refused is not None:
                _warn_once(self._owner, f"control thread: real-time priority (SCHED_FIFO "
                                        f"{self._priority}) refused ({refused}); it runs with normal "
                                        f"scheduling and its period may jitter by several ms under "
                                        f"load. To fix: {HOW_TO_GRANT}.")
        try:
            self._executor.spin()
        except (ExternalShutdownException, ShutdownException):
            pass  # the executor or its context shut down: the timer is over
