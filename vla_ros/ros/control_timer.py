"""ControlTimer: vla_node's control timer on a hidden helper node with its own executor and thread.

Nothing that the main node's executor runs (camera decoding, services, status) can delay it. The
main node's clock drives the timer, so use_sim_time (/clock) applies to it too. With `priority`
> 0 the thread asks for SCHED_FIFO scheduling (needs CAP_SYS_NICE or an rtprio limit) and keeps
normal scheduling, with a warning, when that is refused.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, ShutdownException, SingleThreadedExecutor
from rclpy.node import Node


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

    def start(self) -> None:
        """Start the timer's thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the executor, join the thread (up to 2 s) and destroy the helper node."""
        self._executor.shutdown(timeout_sec=1.0)
        if self._thread.ident is not None:
            self._thread.join(2.0)
        self._node.destroy_node()

    def _main(self) -> None:
        if self._priority > 0:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self._priority))
            except (OSError, AttributeError) as exc:
                self._owner.get_logger().warning(f"control thread keeps normal scheduling (SCHED_FIFO "
                                                 f"{self._priority} refused: {exc})")
        try:
            self._executor.spin()
        except (ExternalShutdownException, ShutdownException):
            pass  # the executor or its context shut down: the timer is over
