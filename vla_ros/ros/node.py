"""vla_node: the managed (lifecycle) ROS 2 node that runs a VLA policy on a robot arm.

Its halves may run on two computers (parameter split.role, README "Policy on another computer"):
role both (vla_node) runs policy and control in one process and also publishes each chunk as a
vla_ros/ActionChunk; role policy (vla_policy_node) runs the cameras, instruction and model and publishes
the chunks; role control (vla_control_node) receives them (ControlHalf: link checks, age and clock checks)
and runs the control timer, scheduler and safety filter. Each role creates only its own interfaces.

Threads, so that nothing delays the control timer:
- the caller's executor spins this node: camera/instruction/e-stop/pose/joint-state callbacks (a
  camera frame is only checked there; the inference worker decodes it), services, lifecycle
  transitions and the status timer;
- the control timer lives on a small hidden helper node spun by its OWN SingleThreadedExecutor
  in its own thread (ros/control_timer.py, created on activate): it only calls `ControlCore.tick`
  and publishes;
- the policy runs in the inference worker (a thread, or a child process with the parameter
  execution.inference_process), never in a ROS callback.

Inputs: the primary camera (topics.camera) paces inference; a policy that takes several cameras
(PolicyInputs) gets every camera's newest frame with it (topics.extra_cameras, each with its own QoS
and age gate) and, with policy.proprio_source, the proprio vector from joint states or pose + gripper.
An inference starts only when ControlCore.wants_inference says a new chunk is due.

Lifecycle: configure reads the parameters, builds the policy and creates the ROS interfaces;
activate starts the control timer (the node stays DISARMED until ~/arm); deactivate publishes a
final HOLD and stops the timer; cleanup/shutdown release everything.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import SetBool, Trigger

from vla_ros.control.chunks import chunk_settings
from vla_ros.control.chunks import describe as describe_chunking
from vla_ros.control.core import ControlCore
from vla_ros.control.safety import Command
from vla_ros.control.split import ChunkSender, ControlHalf
from vla_ros.control.status import LastError, LoopMonitor
from vla_ros.control.ticks import TickRecorder
from vla_ros.core.cameras import CameraSettings, camera_settings, inputs_problem
from vla_ros.core.config import NodeConfig
from vla_ros.core.images import CompressedFrame, RawFrame
from vla_ros.core.proprio import (
    ProprioSpec,
    proprio_spec,
)
from vla_ros.core.stats import RateWindow, Throttle
from vla_ros.core.types import ActionChunk, Instruction, InstructionCheck, Policy
from vla_ros.msg import ActionChunk as ActionChunkMsg
from vla_ros.msg import VlaStatus
from vla_ros.ros.camera import CameraSubscription
from vla_ros.ros.chunk_msg import chunk_from_msg, chunk_to_msg, held_instruction_topic
from vla_ros.ros.control_timer import ControlTimer
from vla_ros.ros.conversions import (
    OUTPUT_TYPES,
    command_message,
)
from vla_ros.ros.node_inputs import InputHandling
from vla_ros.ros.node_status import LOG_THROTTLE_S, StatusReporting
from vla_ros.ros.params import declare_config_parameters, read_config_parameters
from vla_ros.ros.qos import chunk_qos, latched_qos, reliable_qos
from vla_ros.runtime.factory import start_worker
from vla_ros.runtime.worker import InferenceWorker

CAMERA_TYPES = {"raw": Image, "compressed": CompressedImage}  # message type per camera transport
# Role control publishes the instruction in force this often (and on change): transient local alone can
# leave a restarted policy half waiting for a writer heartbeat (3 s).
HELD_INSTRUCTION_PERIOD_S = 0.2


class VlaNode(InputHandling, StatusReporting, LifecycleNode):
    """The lifecycle node `vla_node`; see the module docstring for its threads and transitions."""

    def __init__(self, policy: Policy | None = None, *, node_name: str = "vla_node",
                 namespace: str | None = None, context: rclpy.context.Context | None = None,
                 parameter_overrides: list[Parameter] | None = None, cli_args: list[str] | None = None,
                 record_ticks: int = 0, inference_nice: int = 0, control_priority: int | None = None,
                 inference_process: bool | None = None,
                 policy_factory: Callable[[], Policy] | None = None) -> None:
        """Raises ConfigError for a bad parameter. `policy`: a ready policy, always run in a thread;
        otherwise `policy_factory` (picklable) or make_policy builds it (see runtime.factory.start_worker).
        `inference_process` / `control_priority`, when given, set the execution.* parameters of those
        names. `inference_nice` (> 0) lowers the inference priority; `record_ticks`: see `ticks`.
        """
        overrides = list(parameter_overrides or [])
        if inference_process is not None:
            overrides.append(Parameter("execution.inference_process", value=bool(inference_process)))
        if control_priority is not None:
            overrides.append(Parameter("execution.control_priority", value=int(control_priority)))
        super().__init__(node_name, namespace=namespace, context=context,
                         parameter_overrides=overrides, cli_args=cli_args)
        try:
            declare_config_parameters(self)
            self.config: NodeConfig = read_config_parameters(self)
        except Exception:
            super().destroy_node()
            raise
        self._injected_policy = policy
        self._policy_factory = policy_factory
        self._inference_nice = inference_nice
        self.policy: Policy | None = None
        self.core: ControlCore | None = None
        self.worker: InferenceWorker | None = None
        self.ticks = TickRecorder(record_ticks)
        self._errors = LastError()  # behind the `last_error` property
        self._log_gate = Throttle(LOG_THROTTLE_S)
        self._check: InstructionCheck | None = None  # the policy's check_instruction (None: accept all)
        self._rejected_raw = b""  # the last rejected instruction message (a repeat is not logged again)
        self._loop: LoopMonitor | None = None  # control-loop rate / missed ticks, from activate
        self._model_rate: RateWindow | None = None
        self.rejected: dict[str, int] = {"image": 0, "instruction": 0, "pose": 0, "proprio": 0}
        self.commands_published = 0
        self.tick_errors = 0
        self.skipped_no_pose = 0
        self._active = False
        self._instruction = Instruction("", 0.0)
        self._instruction_seen = False  # an instruction message arrived since configure
        self.camera_subs: list[CameraSubscription] = []  # one per camera, primary first
        self.camera_sub: CameraSubscription | None = None  # the primary camera's
        self._cameras: tuple[CameraSettings, ...] = ()
        self._frames: list[CompressedFrame | RawFrame | None] = []  # each camera's newest frame, not decoded
        self._proprio_spec = ProprioSpec()
        self._joints: tuple[np.ndarray, float] | None = None  # the proprio joints' positions, receipt time
        self._backend = ""
        self._sender: ChunkSender | None = None  # roles both and policy: numbers the chunks published
        self._half: ControlHalf | None = None  # role control: the chunks received
        self._chunk_pub = None
        self._held_instruction_pub = None  # role control: the instruction in force, transient local
        self._entities: list[tuple[Callable, object]] = []  # (destroyer, entity) of what configure made
        self._control: ControlTimer | None = None
        self._lifecycle_lock = threading.Lock()
        self._reject_lock = threading.Lock()  # _reject runs in ROS callbacks and in the worker thread

    # ----- lifecycle -----------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read parameters, build the policy (here or in its process; not in role control), create the
        ROS interfaces of the role."""
        try:
            cfg = read_config_parameters(self)
            cameras = camera_settings(cfg.topics, cfg.safety.max_image_age_s)
            proprio = proprio_spec(cfg.policy.proprio_source, cfg.policy.proprio_joints,
                                   cfg.policy.proprio_gripper_joints, cfg.topics.pose)
            chunking = chunk_settings(cfg.control)
            core = ControlCore(cfg.safety, 1.0 / cfg.control.control_rate_hz, cfg.control.action_period_s,
                               chunking=chunking, cameras={c.topic: c.max_age_s for c in cameras},
                               future_tolerance_s=cfg.split.clock_tolerance_s)
            worker = self._start_worker(cfg) if cfg.split.role != "control" else None
        except Exception as exc:  # rclpy would swallow it: say why before failing the transition
            return self._configure_failed(str(exc))
        if worker is not None:
            mismatch = inputs_problem(worker.inputs, cameras, proprio)
            if mismatch is not None:
                worker.stop(2.0)
                return self._configure_failed(mismatch)
            self._backend = worker.describe()
            family = getattr(getattr(worker.policy, "family", None), "name", "")
            self._sender = ChunkSender(cfg.control.action_period_s, self._backend, str(family))
            self._check = worker.instruction_check
        else:
            self._half = ControlHalf(core, cfg.control.action_period_s, cfg.split.watch_cameras)
        self.config, self.policy, self.core, self.worker = cfg, getattr(worker, "policy", None), core, worker
        self._cameras, self._proprio_spec = cameras, proprio
        self._frames = [None] * len(cameras)
        self._create_interfaces(cfg)
        self.get_logger().info(self._configured_line(cfg))
        if worker is not None and worker.inputs.chunk > 1:
            self.get_logger().info(describe_chunking(chunking))
        return super().on_configure(state)

    def _start_worker(self, cfg: NodeConfig) -> InferenceWorker:
        """The inference worker with the policy (in a thread or a child process)."""
        return start_worker(cfg.policy, self._on_chunk, self._on_fault,
                            in_process=cfg.execution.inference_process, policy=self._injected_policy,
                            policy_factory=self._policy_factory, nice=self._inference_nice,
                            process_nice=cfg.execution.inference_nice, warn=self.get_logger().warning,
                            on_reject=self._reject)  # frames damaged when decoded: rejected inputs

    def _configured_line(self, cfg: NodeConfig) -> str:
        """The configure log line of the role."""
        worker, role = self.worker, cfg.split.role
        policy = ""
        if worker is not None:
            where = "thread" if worker.policy is not None else "process"
            policy = f"policy {self._backend} (inference {where}), chunks on {self._chunk_pub.topic_name}"
        if role == "policy":
            return f"configured (role policy): {policy}" + self._inputs_summary()
        control = (f"control {cfg.control.control_rate_hz} Hz, output {cfg.topics.output_mode} on "
                   f"{self._command_pub.topic_name}")
        if role == "control":
            watch = "camera topics" if cfg.split.watch_cameras else "chunk stamps"
            return (f"configured (role control): chunks from {cfg.split.chunk_topic}, {control}, "
                    f"image watchdog from {watch}")
        return f"configured: {policy}, {control}" + self._inputs_summary()

    def _inputs_summary(self) -> str:
        """The cameras and proprio source for the configure log line ('' for one camera, no proprio)."""
        cameras = f", cameras {', '.join(c.topic for c in self._cameras)}" if len(self._cameras) > 1 else ""
        spec = self._proprio_spec
        return cameras + (f", proprio {spec.source} ({spec.dim} values)" if spec.dim else "")

    def _configure_failed(self, why: str) -> TransitionCallbackReturn:
        self.last_error = f"configure failed: {why}"
        self.get_logger().error(self.last_error)
        return TransitionCallbackReturn.FAILURE

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Enable publishing and start the control timer; the node stays DISARMED until ~/arm."""
        ret = super().on_activate(state)  # enables the lifecycle publishers
        self._reset_rates()
        self._active = True
        if self.config.split.role == "policy":
            self.get_logger().info("active: publishing action chunks (the control half arms the robot)")
            return ret
        self._start_control_loop()
        self.get_logger().info("active (DISARMED: call ~/arm to arm)")
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Disarm, publish one final HOLD, stop the control timer."""
        self._halt()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the policy and every ROS interface created by configure."""
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Halt if active, then release everything."""
        if self._active:
            self._halt()
        self._release()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: halt, release and go back to unconfigured."""
        self.get_logger().error(f"lifecycle error in state {state.label}; releasing everything")
        if self._active:
            self._halt()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Stop the control thread and the worker before destroying the node."""
        self._stop_control_loop()
        if self.worker is not None:
            self.worker.stop(1.0)
        super().destroy_node()

    def _create_interfaces(self, cfg: NodeConfig) -> None:
        topics, rel, role = cfg.topics, reliable_qos(), cfg.split.role
        publishers, subs, services = [], [], []
        if role != "policy":
            out_type = OUTPUT_TYPES[topics.output_mode]
            self._command_pub = self.create_lifecycle_publisher(out_type, topics.command, rel)
            publishers.append(self._command_pub)
            self._gripper_pub = None
            if topics.output_mode != "end_effector":  # Twist / Pose carry no gripper
                self._gripper_pub = self.create_lifecycle_publisher(Float64, topics.command + "/gripper", rel)
                publishers.append(self._gripper_pub)
            subs.append(self.create_subscription(Bool, topics.estop, self._on_estop, rel))
            services = [self.create_service(SetBool, "~/arm", self._on_arm),
                        self.create_service(Trigger, "~/reset_estop", self._on_reset_estop)]
        if role == "control":
            subs.append(self.create_subscription(ActionChunkMsg, cfg.split.chunk_topic, self._on_chunk_msg,
                                                 chunk_qos()))
        else:
            self._chunk_pub = self.create_lifecycle_publisher(ActionChunkMsg, cfg.split.chunk_topic,
                                                              chunk_qos())
            publishers.append(self._chunk_pub)
        self._status_pub = self.create_publisher(VlaStatus, "~/status", rel)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", rel)
        # Cameras and instruction arrive as raw bytes: size limits and strict UTF-8 come before parsing.
        # Each camera's reliability follows its publishers (auto) and its transport losses are counted.
        # Role control watches the cameras only for the image age gate (split.watch_cameras).
        watch = role != "control" or cfg.split.watch_cameras
        self.camera_subs = [CameraSubscription(self, cam.topic, CAMERA_TYPES[cam.transport],
                                               functools.partial(self._on_camera, index), cam.reliability,
                                               raw=True)
                            for index, cam in enumerate(self._cameras)] if watch else []
        self.camera_sub = self.camera_subs[0] if self.camera_subs else None
        subs.append(self.create_subscription(String, topics.instruction, self._on_instruction, rel, raw=True))
        # The control half holds the instruction in force for a policy half that (re)starts later.
        held_topic = held_instruction_topic(cfg.split.chunk_topic)
        plain = [self._status_pub, self._diag_pub]  # publishers that are not lifecycle publishers
        timers = [self.create_timer(1.0 / cfg.control.status_rate_hz, self._on_status)]
        if role == "control":
            self._held_instruction_pub = self.create_publisher(String, held_topic, latched_qos())
            plain.append(self._held_instruction_pub)
            timers.append(self.create_timer(HELD_INSTRUCTION_PERIOD_S, self._publish_held_instruction))
        if role == "policy":
            subs.append(self.create_subscription(String, held_topic, self._on_held_instruction, latched_qos(),
                                                 raw=True))
        if topics.pose:
            subs.append(self.create_subscription(PoseStamped, topics.pose, self._on_pose, rel))
        if self._proprio_spec.joints and role != "control":  # best effort: matches either joint publisher
            subs.append(self.create_subscription(JointState, topics.joint_states, self._on_joint_states,
                                                 qos_profile_sensor_data))
        self._entities = ([(self.destroy_lifecycle_publisher, p) for p in publishers]
                          + [(self.destroy_publisher, p) for p in plain]
                          + [(CameraSubscription.destroy, c) for c in self.camera_subs]
                          + [(self.destroy_subscription, s) for s in subs]
                          + [(self.destroy_service, s) for s in services]
                          + [(self.destroy_timer, t) for t in timers])

    def _halt(self) -> None:
        self._active = False
        if self.worker is not None:
            self.worker.clear()
        self._stop_control_loop()
        if self.core is not None and self.config.split.role != "policy":
            self.core.set_armed(False)
            try:
                self._publish(self.core.tick(self._now()))  # a final explicit HOLD
            except Exception as exc:
                self.get_logger().error(f"final HOLD not published: {exc}")
        self.get_logger().info("deactivated: no more action chunks" if self.config.split.role == "policy"
                               else "deactivated: DISARMED, control timer stopped")

    def _release(self) -> None:
        self._stop_control_loop()
        if self.worker is not None and not self.worker.stop(2.0):
            self.get_logger().warning("the policy call still running was abandoned (it is hung)")
        for destroy, entity in self._entities:
            destroy(entity)
        self._entities = []
        self.worker, self.policy, self.core, self._joints = None, None, None, None
        self._sender, self._half, self._chunk_pub, self._held_instruction_pub = None, None, None, None
        self.camera_sub, self.camera_subs, self._frames = None, [], []
        self._instruction = Instruction("", 0.0)
        self._instruction_seen = False

    # ----- the control loop (its own node, executor and thread) ----------------------------------
    def _start_control_loop(self) -> None:
        self._stop_control_loop()
        cfg = self.config
        timer = ControlTimer(self, 1.0 / cfg.control.control_rate_hz, self._on_tick,
                             cfg.execution.control_priority)
        with self._lifecycle_lock:
            self._control = timer
        timer.start()

    def _stop_control_loop(self) -> None:
        with self._lifecycle_lock:
            timer, self._control = self._control, None
        if timer is not None:
            timer.stop()

    def _on_tick(self) -> None:
        t = time.perf_counter()
        self.ticks.add(t)
        loop = self._loop
        if loop is not None:
            loop.tick(t)
        core = self.core
        if core is None:
            return
        try:
            self._publish(core.tick(self._now()))
        except Exception as exc:  # a bug must not stop the loop; nothing unfiltered is published
            self.tick_errors += 1
            self.last_error = f"control tick failed: {exc!r}"
            self.get_logger().error(self.last_error, throttle_duration_sec=LOG_THROTTLE_S)

    def _publish(self, cmd: Command) -> None:
        cfg, pose = self.config, self.core.pose if self.core is not None else None
        stale = pose is None or cmd.stamp - pose.stamp > cfg.safety.max_pose_age_s
        if cfg.topics.output_mode == "pose" and stale:
            # An absolute target from an old pose could send the arm back: publish nothing.
            self.skipped_no_pose += 1
            self.get_logger().warning(f"output_mode 'pose' but no fresh end-effector pose on "
                                      f"'{cfg.topics.pose}': nothing published",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        self._command_pub.publish(command_message(cmd, cfg.topics.output_mode, cfg.control.frame_id,
                                                  1.0 / cfg.control.control_rate_hz, pose))
        if self._gripper_pub is not None:
            self._gripper_pub.publish(Float64(data=float(cmd.gripper)))
        self.commands_published += 1

    # ----- services and worker callbacks (the input callbacks are in ros/node_inputs.py) ---------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_arm(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        core = self.core
        if core is None or not self._active:
            response.success, response.message = False, "node is not active: configure and activate it first"
        elif request.data and core.estopped:
            response.success, response.message = False, "e-stop latched: call ~/reset_estop first"
        else:
            core.set_armed(bool(request.data))
            response.success = True
            response.message = "armed" if request.data else "disarmed (HOLD)"
            self.get_logger().warning(f"{response.message} by service call")
        return response

    def _on_reset_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        core = self.core
        if core is None:
            response.success, response.message = False, "node is not configured"
            return response
        core.set_armed(False)  # never resume motion straight out of an e-stop
        core.reset_estop()
        response.success, response.message = True, "e-stop released; DISARMED: call ~/arm to resume"
        self.get_logger().warning(response.message)
        return response

    def _on_chunk(self, chunk: ActionChunk) -> None:  # worker thread (roles both and policy)
        """A chunk from the policy: into the control core (role policy: it only paces inference), then
        published on split.chunk_topic."""
        model_rate = self._model_rate
        if model_rate is not None:
            model_rate.add(time.perf_counter())
        core, sender, pub = self.core, self._sender, self._chunk_pub
        if core is not None:
            core.on_chunk(chunk, self._now())
        if sender is not None and pub is not None and self._active:
            pub.publish(chunk_to_msg(sender.envelope(chunk), self.config.control.frame_id))

    def _publish_held_instruction(self) -> None:  # role control
        pub, core = self._held_instruction_pub, self.core
        if pub is not None and core is not None:
            pub.publish(String(data=core.instruction))

    def _on_chunk_msg(self, msg: ActionChunkMsg) -> None:  # role control
        """A chunk from the policy half: checked, through the link monitor, into the control core."""
        half, now = self._half, self._now()
        if half is None:
            return
        try:
            envelope = chunk_from_msg(msg)
        except ValueError as exc:
            half.core.reject_chunk("invalid", str(exc))
            self._log_throttled("chunk", self._errors.set("chunk", f"rejected action chunk: {exc}", now))
            return
        model_rate = self._model_rate
        if model_rate is not None:
            model_rate.add(time.perf_counter())
        verdict = half.on_chunk(envelope, now)
        if verdict == "rejected":
            text = self._errors.set("chunk", f"rejected action chunk: {half.core.last_error}", now)
            self._log_throttled("chunk", text)
        elif verdict == "accepted":
            self._errors.resolve("chunk", now)  # a chunk rejected earlier is no longer the last word
        problem = half.link.clock_problem()
        if problem:
            self._log_throttled("clock", problem)

    def _on_fault(self, reason: str | None) -> None:  # worker thread
        core = self.core
        if core is None:
            return
        core.set_fault(reason)
        if reason is None:
            self._errors.resolve("policy")
            self.get_logger().info("policy recovered: FAULT cleared")
        else:
            self._errors.set("policy", f"policy FAULT: {reason}", self._now())
            self.get_logger().error(f"policy FAULT: {reason}", throttle_duration_sec=LOG_THROTTLE_S)
