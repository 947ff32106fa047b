"""The ROS graph of `vla-ros demo`: vla_sim + vla_node in this process, and the episode driver.

- `InProcessGraph` starts vla_sim and vla_node (configured, activated, DISARMED) in one rclpy context,
  each node on its own SingleThreadedExecutor thread; vla_node's control timer keeps its own
  executor (inside VlaNode) and the policy runs in its worker thread or child process.
- `EpisodeDriver` is a third node that talks to the graph only through ROS: it waits for the graph,
  arms vla_node through `~/arm`, resets the simulator through `vla_sim/reset`, publishes the
  instruction, watches `sim/success` and `vla_node/status`, and publishes an empty instruction
  (HOLD) at the end of each episode. It works the same against nodes in other processes
  (launch/demo.launch.py runs it with --attach).

The bag recorder is vla_ros.ros.demo_recorder; the run itself, vla_ros.ros.demo_run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

from vla_ros.core.config import NodeConfig
from vla_ros.core.schema import ConfigError
from vla_ros.msg import EndEffectorCommand, VlaStatus
from vla_ros.ros.node import VlaNode
from vla_ros.ros.params import config_to_parameters
from vla_ros.ros.qos import reliable_qos
from vla_ros.ros.sim_node import SimNode
from vla_ros.sim.config import sim_config_for
from vla_ros.sim.expert_policy import ExpertPolicy

SIM_NODE = "vla_sim"
VLA_NODE = "vla_node"
DRIVER_NODE = "vla_demo_driver"
SUCCESS_TOPIC = "sim/success"
TASK_TOPIC = "sim/task"


class GraphError(RuntimeError):
    """The demo cannot run (a node did not start, a service did not answer): a real error."""


Log = Callable[[str], None]


# ----------------------------------------------------------------------------------------------- helpers
def wait_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.02) -> bool:
    """Poll `predicate` until true or `timeout_s` passes; returns its last value."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step_s)
    return bool(predicate())


class Spinner:
    """One SingleThreadedExecutor spinning one node in a daemon thread."""

    def __init__(self, node, context, name: str) -> None:  # noqa: ANN001 - rclpy Node / Context
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(node)
        self.thread = threading.Thread(target=self._spin, name=name, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except (rclpy.executors.ExternalShutdownException, rclpy.executors.ShutdownException):
            pass

    def stop(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(3.0)


def ros_args(verbose: bool) -> list[str]:
    """Context arguments: ROS console output at WARN unless verbose (the demo prints its own progress)."""
    return [] if verbose else ["--ros-args", "--log-level", "warn"]


# ----------------------------------------------------------------------------------------------- graph
@dataclass
class GraphOptions:
    """What the in-process graph runs."""

    config: NodeConfig
    seed: int = 0
    task_kind: str = ""  # '' random, 'pick' or 'move'
    camera_rate_hz: float = 10.0
    expert: bool = False  # vla_node runs ExpertPolicy on the simulator's world, not the config's model
    inference_process: bool = False  # True forces a child process; False keeps the config's choice
    verbose: bool = False


class InProcessGraph:
    """vla_sim and vla_node in one rclpy context, one executor thread each."""

    def __init__(self, options: GraphOptions) -> None:
        self.options = options
        self.context = rclpy.Context()
        self.sim = None
        self.vla = None
        self._spinners: list[Spinner] = []

    def start(self, log: Log) -> None:
        """Create the nodes, configure and activate vla_node (raises GraphError with the reason)."""
        opt, cfg = self.options, self.options.config
        rclpy.init(args=ros_args(opt.verbose), context=self.context)
        try:
            sim_cfg = sim_config_for(cfg, seed=opt.seed, task_kind=opt.task_kind,
                                     camera_rate_hz=opt.camera_rate_hz)
            self.sim = SimNode(context=self.context, parameter_overrides=config_to_parameters(sim_cfg))
        except ConfigError as exc:
            raise GraphError(f"vla_sim: {exc}") from exc
        self._spinners.append(Spinner(self.sim, self.context, "vla-demo-sim"))
        policy = ExpertPolicy(self.sim.world) if opt.expert else None  # None: the config's model
        try:
            self.vla = VlaNode(policy, node_name=VLA_NODE, context=self.context,
                               parameter_overrides=config_to_parameters(cfg),
                               inference_process=True if opt.inference_process and policy is None else None)
        except ConfigError as exc:
            raise GraphError(f"vla_node: invalid parameter: {exc}") from exc
        log("loading the policy (configure vla_node) ...")
        if self.vla.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise GraphError(f"vla_node: {self.vla.last_error or 'configure failed'}")
        if self.vla.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise GraphError("vla_node: activate failed")
        self._spinners.append(Spinner(self.vla, self.context, "vla-demo-node"))

    def close(self) -> None:
        """Final HOLD (vla_node shutdown transition), stop the executors, destroy the nodes."""
        if self.vla is not None and self.context.ok():
            try:
                self.vla.trigger_shutdown()
            except Exception:  # noqa: BLE001 - already shut down or half configured: release anyway
                pass
        for spinner in self._spinners:
            spinner.stop()
        self._spinners = []
        for node in (self.vla, self.sim):
            if node is not None:
                node.destroy_node()
        self.vla = self.sim = None
        if self.context.ok():
            rclpy.shutdown(context=self.context)


# ----------------------------------------------------------------------------------------------- episodes
@dataclass
class EpisodeOutcome:
    """One demo episode as the driver saw it over ROS (times are wall clock, ns since 1970)."""

    index: int  # 1-based
    instruction: str
    kind: str
    scene_seed: int | None  # the simulator's scene seed when known (in-process graph)
    success: bool
    seconds: float  # from publishing the instruction to success or the time limit
    reason: str  # "success" | "time limit"
    start_ns: int
    end_ns: int  # when the HOLD (empty instruction) was published
    commands: int = 0  # vla_node commands received during the episode
    moving_commands: int = 0  # not HOLD and a non-zero translation or rotation
    holds: int = 0
    safety_interventions: int = 0  # commands with any intervention bit set
    control_rate_hz: float = 0.0  # achieved, mean over the episode's status messages
    model_rate_hz: float = 0.0  # mean over the episode's status messages
    inference_latency_s: float = 0.0  # mean over the episode's status messages
    final_state: str = ""
    task_confirmed: bool = False  # vla_sim's sim/task showed this instruction during the episode
    policy_errors: int = 0
    last_error: str = ""


@dataclass
class CommandLog:
    """Commands received by the driver: receipt time [ns], 7 values, hold, interventions."""

    stamps_ns: list[int] = field(default_factory=list)
    values: list[list[float]] = field(default_factory=list)
    hold: list[bool] = field(default_factory=list)
    interventions: list[int] = field(default_factory=list)

    def append(self, t_ns: int, msg: EndEffectorCommand) -> None:
        self.values.append([msg.translation.x, msg.translation.y, msg.translation.z,
                            msg.rotation.x, msg.rotation.y, msg.rotation.z, msg.gripper])
        self.hold.append(bool(msg.hold))
        self.interventions.append(int(msg.interventions))
        self.stamps_ns.append(t_ns)  # last: readers use len(stamps_ns) as the count of complete rows

    def window(self, start_ns: int, end_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(stamps [N], values [N, 7], hold [N], interventions [N]) received in [start_ns, end_ns]."""
        n = len(self.stamps_ns)
        stamps = np.array(self.stamps_ns[:n], np.int64)
        keep = (stamps >= start_ns) & (stamps <= end_ns)
        values = np.array(self.values[:n], np.float64).reshape(-1, 7)
        return (stamps[keep], values[keep], np.array(self.hold[:n], bool)[keep],
                np.array(self.interventions[:n], np.int64)[keep])


class EpisodeDriver:
    """Drives episodes through the ROS graph: reset, instruction, success or time limit, HOLD."""

    def __init__(self, context: rclpy.Context, config: NodeConfig, seed: int | None = None) -> None:
        """`seed`: the simulator's seed parameter when this process set it (scene seeds are then known)."""
        self.config = config
        self.seed = seed
        self.resets = 0
        self.node = rclpy.create_node(DRIVER_NODE, context=context, start_parameter_services=False)
        rel = reliable_qos()
        topics = config.topics
        self.success: list[bool] = []
        self.tasks: list[str] = []
        self.statuses: list[tuple[float, VlaStatus]] = []  # (monotonic receipt time, status)
        self.commands = CommandLog()
        self.instruction_pub = self.node.create_publisher(String, topics.instruction, rel)
        self.node.create_subscription(Bool, SUCCESS_TOPIC, self._on_success, rel)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, TASK_TOPIC, lambda m: self.tasks.append(m.data), latched)
        self.node.create_subscription(VlaStatus, f"{VLA_NODE}/status", self._on_status, rel)
        self.node.create_subscription(EndEffectorCommand, topics.command, self._on_command, reliable_qos(100))
        self.reset_client = self.node.create_client(Trigger, f"{SIM_NODE}/reset")
        self.arm_client = self.node.create_client(SetBool, f"{VLA_NODE}/arm")
        self._spinner = Spinner(self.node, context, "vla-demo-driver")

    # ----- callbacks (driver executor thread) ----------------------------------------------------------
    def _on_success(self, msg: Bool) -> None:
        self.success.append(bool(msg.data))

    def _on_status(self, msg: VlaStatus) -> None:
        self.statuses.append((time.monotonic(), msg))

    def _on_command(self, msg: EndEffectorCommand) -> None:
        self.commands.append(time.time_ns(), msg)

    # ----- graph --------------------------------------------------------------------------------------
    def wait_ready(self, timeout_s: float) -> None:
        """Wait for the simulator, vla_node (configured, receiving images) and both services."""
        deadline = time.monotonic() + timeout_s
        topics = self.config.topics
        node_name = VLA_NODE

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        checks: list[tuple[str, Callable[[], bool]]] = [
            ("vla_sim's reset service", lambda: self.reset_client.service_is_ready()),
            ("vla_sim's sim/success topic", lambda: len(self.success) > 0),
            ("vla_node's ~/arm service", lambda: self.arm_client.service_is_ready()),
            (f"vla_node's subscription to {topics.instruction}",
             lambda: node_name in self._subscriber_names(topics.instruction)),
            ("vla_node's status (configured)", lambda: len(self.statuses) > 0),
            (f"camera images at vla_node (topic {topics.camera})", self._node_sees_images),
            (f"vla_node's commands on {topics.command}", lambda: len(self.commands.stamps_ns) > 0),
        ]
        for what, check in checks:
            if not wait_until(check, left()):
                raise GraphError(f"timed out after {timeout_s:g} s waiting for {what}; is the node running "
                                 f"with the demo configuration (config/demo.yaml)?")

    def _subscriber_names(self, topic: str) -> set[str]:
        infos = self.node.get_subscriptions_info_by_topic(self.node.resolve_topic_name(topic))
        return {info.node_name for info in infos}

    def _node_sees_images(self) -> bool:
        if not self.statuses:
            return False
        status = self.statuses[-1][1]
        return 0.0 <= status.image_age_s <= self.config.safety.max_image_age_s

    def _call(self, client, request, what: str, timeout_s: float = 10.0):  # noqa: ANN001
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise GraphError(f"{what}: service {client.srv_name} is not available")
        future = client.call_async(request)
        if not wait_until(future.done, timeout_s):
            raise GraphError(f"{what}: service {client.srv_name} did not answer within {timeout_s:g} s")
        return future.result()

    def arm(self, on: bool = True) -> None:
        """Arm (or disarm) vla_node through its ~/arm service."""
        response = self._call(self.arm_client, SetBool.Request(data=on), "arm vla_node" if on else "disarm")
        if not response.success:
            raise GraphError(f"vla_node refused to {'arm' if on else 'disarm'}: {response.message}")

    def say(self, text: str) -> None:
        """Publish an instruction ('' = HOLD)."""
        self.instruction_pub.publish(String(data=text))

    def reset(self) -> str:
        """A new scene and task in the simulator; returns its instruction."""
        response = self._call(self.reset_client, Trigger.Request(), "reset vla_sim")
        if not response.success or not response.message:
            raise GraphError(f"vla_sim reset failed: {response.message!r}")
        self.resets += 1
        return response.message

    # ----- one episode --------------------------------------------------------------------------------
    def run_episode(self, index: int, max_seconds: float, settle_s: float = 0.5,
                    instruction: Callable[[str], str] | None = None,
                    progress: Callable[[float, VlaStatus | None], None] | None = None,
                    progress_period_s: float = 1.0) -> EpisodeOutcome:
        """Reset, instruct, wait for sim/success (after the reset) or the time limit, then HOLD.

        `instruction` maps the simulator's instruction to the one published (vla_sim adopts an
        instruction naming one of its objects as the task); default: publish it unchanged.
        """
        tasks_from = len(self.tasks)
        text = self.reset()
        text = instruction(text) if instruction is not None else text
        scene_seed = None if self.seed is None else self.seed + self.resets
        first = len(self.success)
        # sim/success is latched per episode: a True of the previous scene may still be in flight, so
        # the new episode's signal counts only after its first False (published with its first frame).
        if not wait_until(lambda: False in self.success[first:], 5.0):
            raise GraphError("vla_sim published no sim/success after the reset")
        fresh = first + self.success[first:].index(False)
        time.sleep(0.05)  # the new scene's first frame reaches vla_node before the instruction
        status_from = len(self.statuses)
        start_ns, t0 = time.time_ns(), time.monotonic()
        self.say(text)
        success, reason = False, "time limit"
        next_progress = t0 + progress_period_s
        while True:
            if True in self.success[fresh:]:
                success, reason = True, "success"
                break
            now = time.monotonic()
            if now - t0 >= max_seconds:
                break
            if progress is not None and now >= next_progress:
                next_progress += progress_period_s
                progress(now - t0, self.statuses[-1][1] if self.statuses else None)
            time.sleep(0.02)
        seconds = time.monotonic() - t0
        self.say("")
        end_ns = time.time_ns()
        time.sleep(settle_s)  # let the HOLD show in the bag before the next reset
        outcome = EpisodeOutcome(index, text, "", scene_seed, success, round(seconds, 3), reason,
                                 start_ns, end_ns)
        outcome.task_confirmed = text in self.tasks[tasks_from:]
        self._fill_stats(outcome, status_from)
        return outcome

    def _fill_stats(self, outcome: EpisodeOutcome, status_from: int) -> None:
        _, values, hold, interventions = self.commands.window(outcome.start_ns, outcome.end_ns)
        outcome.commands = int(len(hold))
        outcome.holds = int(hold.sum())
        moving = ~hold & (np.abs(values[:, :6]).sum(axis=1) > 0) if len(hold) else np.zeros(0, bool)
        outcome.moving_commands = int(moving.sum())
        outcome.safety_interventions = int((interventions != 0).sum())
        statuses = [s for _, s in self.statuses[status_from:]]
        if statuses:
            outcome.control_rate_hz = round(_mean_rate([s.control_rate_hz for s in statuses]), 3)
            outcome.model_rate_hz = round(_mean_rate([s.model_rate_hz for s in statuses]), 3)
            outcome.inference_latency_s = round(float(np.mean([s.inference_latency_s for s in statuses])), 4)
            last = statuses[-1]
            outcome.final_state = last.state_name
            outcome.policy_errors = int(last.policy_errors)
            outcome.last_error = last.last_error

    def close(self) -> None:
        self._spinner.stop()
        self.node.destroy_node()


def _mean_rate(rates: list[float]) -> float:
    """Mean of the reported rates, skipping the "no full window yet" value (negative)."""
    known = [r for r in rates if r >= 0]
    return float(np.mean(known)) if known else 0.0
