"""The node's configuration: one validated schema for ROS parameters, config/*.yaml and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vla_ros.core.limits import SafetyLimits
from vla_ros.core.schema import ConfigError, apply_overrides, flatten_yaml, param, validate


@dataclass
class TopicsConfig:
    """Topic names and transports (relative names resolve in the node's namespace)."""

    camera: str = param("camera/image_raw", "camera topic (sensor_msgs/Image or CompressedImage)")
    camera_transport: str = param("raw", "raw: sensor_msgs/Image; compressed: CompressedImage",
                                  choices=("raw", "compressed"))
    camera_reliability: str = param(
        "auto", "camera QoS reliability; auto: reliable iff every publisher on the topic offers reliable, "
        "re-chosen when publishers come and go (the rosbag2 rule)",
        choices=("auto", "reliable", "best_effort"))
    extra_cameras: list[str] = param(
        [], "further camera topics after topics.camera, in the checkpoint's camera order (OpenVLA-OFT: "
        "the wrist camera(s), e.g. [wrist/image_raw]); their frames are paired with the primary's")
    extra_camera_transports: list[str] = param(
        [], "per extra camera, raw or compressed (same order and length as topics.extra_cameras); "
        "empty = topics.camera_transport for all")
    extra_camera_reliabilities: list[str] = param(
        [], "per extra camera, auto, reliable or best_effort (same order and length as "
        "topics.extra_cameras); empty = topics.camera_reliability for all")
    extra_camera_max_age_s: list[float] = param(
        [], "per extra camera, HOLD when its newest frame is older than this [s] (same order and length "
        "as topics.extra_cameras); empty = safety.max_image_age_s for all", range=(0.001, 60.0))
    joint_states: str = param(
        "joint_states", "sensor_msgs/JointState read for the proprio vector (policy.proprio_source "
        "joint_states or pose_gripper); unused otherwise")
    instruction: str = param("vla/instruction",
                             "std_msgs/String; a new one replaces the old at once, empty = hold")
    estop: str = param("vla/estop", "std_msgs/Bool; true latches the e-stop until ~/reset_estop")
    pose: str = param("", "geometry_msgs/PoseStamped of the end effector; empty = not used")
    command: str = param("vla/command", "output topic for the filtered commands")
    output_mode: str = param(
        "end_effector", "end_effector: vla_ros/EndEffectorCommand; twist: TwistStamped (MoveIt "
        "Servo delta_twist_cmds); pose: PoseStamped target (needs the pose topic)",
        choices=("end_effector", "twist", "pose"))


@dataclass
class PolicyConfig:
    """Which model runs and how."""

    checkpoint: str = param("", "checkpoint directory (OpenVLA HF layout); empty = embedded demo")
    backend: str = param("torch", "inference backend", choices=("torch", "onnxruntime", "tensorrt"))
    engine_dir: str = param("", "directory of exported ONNX graphs / TensorRT engines")
    device: str = param("cpu", "torch device", choices=("cpu", "cuda"))
    dtype: str = param("fp32", "weights and activations dtype", choices=("fp32", "fp16", "bf16"))
    unnorm_key: str = param("", "dataset key of the un-normalization statistics; empty = the only one")
    center_crop: bool = param(False, "0.9-area centre crop (checkpoints trained with augmentation)")
    gripper_binarize: bool = param(False, "round the gripper to 0 or 1")
    gripper_invert: bool = param(False, "use 1 - gripper (for robots where 1 means closed)")
    max_inference_s: float = param(5.0, "a policy call longer than this is a FAULT [s]",
                                   range=(0.01, 600.0))
    threads: int = param(1, "CPU threads for inference (0 = the library's default; 1 leaves cores to the "
                         "control loop on small computers)", range=(0, 256))
    warmup_runs: int = param(2, "predictions on a grey frame before going live (first calls are slow)",
                             range=(0, 100))
    proprio_source: str = param(
        "none", "the robot state the policy gets: none; joint_states: policy.proprio_joints' positions from "
        "topics.joint_states; pose_gripper: LIBERO's 8 values, topics.pose's position and axis-angle then "
        "policy.proprio_gripper_joints' positions; older than safety.max_pose_age_s = no inference",
        choices=("none", "joint_states", "pose_gripper"))
    proprio_joints: list[str] = param(
        [], "joint names whose positions form the proprio vector, in the checkpoint's order "
        "(proprio_source joint_states; ALOHA: 14)")
    proprio_gripper_joints: list[str] = param(
        [], "the two finger joints whose positions end the proprio vector (proprio_source pose_gripper)")
    action_scale: list[float] = param(
        [], "model units -> robot units for dx, dy, dz [m], droll, dpitch, dyaw [rad] per unit (6 values; "
        "empty = 1). OpenVLA/Bridge actions are metres and radians already; LIBERO's are OSC controller "
        "units: [0.05, 0.05, 0.05, 0.5, 0.5, 0.5]. A robot profile may set it")

    def check(self) -> None:
        if self.action_scale and len(self.action_scale) != 6:
            raise ConfigError(f"parameter 'policy.action_scale' needs 6 values (dx, dy, dz, droll, dpitch, "
                              f"dyaw) or none, got {len(self.action_scale)}")


@dataclass
class ControlConfig:
    """Timing of the control loop."""

    control_rate_hz: float = param(10.0, "command publishing rate [Hz]", range=(1.0, 1000.0))
    action_period_s: float = param(
        0.2, "time one model action spans, the training data's control period [s] (Bridge: 0.2)",
        range=(0.001, 10.0))
    frame_id: str = param(
        "base_link", "frame the deltas are expressed in and the pose is measured in (non-empty)")
    status_rate_hz: float = param(2.0, "VlaStatus and /diagnostics rate [Hz]", range=(1.0, 50.0))
    chunk_alignment: str = param(
        "auto", "where a chunk of actions starts in time. observation: action k spans [stamp + k*P, "
        "stamp + (k+1)*P) from its observation's stamp, the actions that passed while the model ran are "
        "dropped (counted) and a chunk arriving after all of them is rejected as late; arrival: from when "
        "it arrives; auto: observation for chunks of more than one action (OpenVLA-OFT), arrival for "
        "one-action chunks (autoregressive OpenVLA)", choices=("auto", "observation", "arrival"))
    chunk_rule: str = param(
        "crossfade", "how a newer chunk takes over from the one in force (chunks of more than one action; "
        "a one-action chunk always replaces). crossfade: replace, fading linearly from the old chunk's "
        "per-period actions to the new one's over crossfade_s (gripper: the new value past half the fade); "
        "replace: at once; blend: where the chunks overlap in time, new*blend_weight + old*(1 - "
        "blend_weight); ensemble: ACT's temporal ensembling, every chunk covering a time weighs "
        "exp(-ensemble_decay*i), i = 0 for the oldest, only sensible when inference is faster than one "
        "action period", choices=("crossfade", "replace", "blend", "ensemble"))
    crossfade_s: float = param(
        0.1, "duration of the crossfade at a chunk switch (chunk_rule crossfade) [s]; an old chunk that "
        "ends during the fade holds its last action until the fade is over; 0 = replace",
        range=(0.0, 10.0))
    blend_weight: float = param(
        0.5, "weight of the newer chunk where two overlap (chunk_rule blend), 0..1; 1 = replace",
        range=(0.0, 1.0))
    ensemble_decay: float = param(
        0.01, "m in ACT's weights exp(-m*i), i = 0 for the oldest prediction (chunk_rule ensemble) "
        "[1/prediction]; 0 = plain mean, larger = the newer predictions count less (ACT: 0.01)",
        range=(0.0, 100.0))
    replan_fraction: float = param(
        0.5, "share of the current chunk's duration (from its alignment) played before the next "
        "inference starts, 0..1; 0 = infer continuously; one-action chunks: always", range=(0.0, 1.0))

    def check(self) -> None:
        if not self.frame_id:
            raise ConfigError("parameter 'control.frame_id' must not be empty")


@dataclass
class ExecutionConfig:
    """Where the node's work runs: the policy's thread or process, the control thread's scheduling."""

    inference_process: bool = param(
        True, "run the policy in a child process: the control loop never waits for its GIL, and a hung "
        "policy is killed and rebuilt; where no child process can be started, a thread (one warning)")
    control_priority: int = param(
        50, "SCHED_FIFO priority of the control thread, 1-99 (50: as ros2_control's controller manager, "
        "level with the kernel's interrupt threads on PREEMPT_RT); needs CAP_SYS_NICE or an rtprio limit, "
        "else normal scheduling and one warning saying how to grant it; 0 = normal scheduling",
        range=(0, 99))
    inference_nice: int = param(
        10, "niceness added to the inference child process: on a busy CPU the node's own threads, which "
        "the control thread shares the GIL with, run before the model; 0 = as the node", range=(0, 19))


@dataclass
class SplitConfig:
    """The policy and control halves: in one process, or on two computers (README)."""

    role: str = param(
        "both", "what this node runs. both: policy and control in one process (vla_node); policy: cameras + "
        "instruction in, action chunks out (the GPU computer); control: action chunks + robot state in, "
        "filtered commands out at the control rate (the robot computer)",
        choices=("both", "policy", "control"))
    chunk_topic: str = param(
        "vla/action_chunk", "vla_ros/ActionChunk topic between the halves (reliable, keep last 4, volatile); "
        "role both publishes its chunks there too, for recording")
    watch_cameras: bool = param(
        True, "role control: feed the image watchdog (safety.max_image_age_s) from the camera topics, as "
        "vla_node does (cameras on the robot computer); false: from the stamps of the chunks received")
    clock_tolerance_s: float = param(
        0.05, "a chunk stamped further in the future than this is rejected and reported as a clock "
        "disagreement between the computers [s]", range=(0.0, 10.0))

    def check(self) -> None:
        if not self.chunk_topic:
            raise ConfigError("parameter 'split.chunk_topic' must not be empty")


@dataclass
class NodeConfig:
    """Everything vla_node reads at start-up."""

    topics: TopicsConfig = field(default_factory=TopicsConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    safety: SafetyLimits = field(default_factory=SafetyLimits)
    split: SplitConfig = field(default_factory=SplitConfig)

    def check(self) -> None:
        for section in (self.policy, self.control, self.safety, self.split):
            section.check()
        if self.topics.output_mode == "pose" and not self.topics.pose:
            raise ConfigError("parameter 'topics.output_mode' = 'pose' needs 'topics.pose' set")


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> NodeConfig:
    """Read a YAML file (plain, or ROS 2 `node: ros__parameters:` form) into a validated NodeConfig."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            tree = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(tree, dict):
            raise ConfigError(f"config {path} must be a mapping")
        tree = _strip_ros_wrapper(tree)
        values.update(flatten_yaml(tree))
    values.update(overrides or {})
    return apply_overrides(validate(NodeConfig()), values)


def _strip_ros_wrapper(tree: dict[str, Any]) -> dict[str, Any]:
    """Accept `{node_name: {ros__parameters: {...}}}` (also under `/**`) as well as a bare mapping."""
    wrapped = [key for key, inner in tree.items() if isinstance(inner, dict) and "ros__parameters" in inner]
    if not wrapped:
        return tree
    if len(tree) != 1:
        raise ConfigError(f"config holds parameters for several nodes ({', '.join(map(str, tree))}); "
                          "keep only vla_node's `ros__parameters`")
    params = tree[wrapped[0]]["ros__parameters"] or {}
    if not isinstance(params, dict):
        raise ConfigError(f"'{wrapped[0]}.ros__parameters' must be a mapping of parameters")
    return params
