"""vla_node's input callbacks: cameras, instruction, e-stop, pose and joint states, and the decision to
start an inference. Mixed into VlaNode (ros/node.py), whose attributes they use; ROS callbacks only
check and store (a camera frame is decoded by the inference worker)."""

from __future__ import annotations

from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String

from vla_ros.control.core import ControlCore
from vla_ros.core.cameras import CameraSettings
from vla_ros.core.images import ImageError, MultiFrame, decode_min_size
from vla_ros.core.inputs import decode_instruction
from vla_ros.core.proprio import ProprioError, current_proprio, pick_joint_positions
from vla_ros.core.types import Instruction
from vla_ros.ros.conversions import camera_frame, pose_from_msg
from vla_ros.runtime.worker import Frame


class InputHandling:
    """The input callbacks of VlaNode."""

    def _on_camera(self, index: int, raw: bytes) -> None:
        # Only the cheap checks here (size, header, end marker); the worker decodes the frame it runs,
        # at a reduced JPEG scale for frames much larger than the model input.
        now = self._now()
        core, worker, camera = self.core, self.worker, self._cameras[index]
        try:
            frame = camera_frame(raw, camera.transport == "compressed", now,
                                 core.pose if core is not None else None,
                                 decode_min_size(worker.input_size if worker is not None else None))
        except ValueError as exc:
            self._reject("image", self._camera_error(camera, exc))
            return
        if core is None:
            return
        core.on_image(now, camera=camera.topic)
        self._errors.resolve("image", now)  # an image rejected earlier is no longer the last word
        frames = self._frames
        frames[index] = frame
        if index == 0:  # the primary camera paces inference; the others' newest frames go with it
            self._maybe_infer(now)

    def _camera_error(self, camera: CameraSettings, exc: ValueError) -> ValueError:
        """The rejection of a frame of `camera`, naming it when the node has several cameras."""
        return ImageError(f"camera '{camera.topic}': {exc}") if len(self._cameras) > 1 else exc

    def _maybe_infer(self, now: float) -> None:
        """Submit the newest observation when there is an instruction and the control core wants a chunk."""
        instruction, core, worker = self._instruction, self.core, self.worker
        if not (self._active and instruction.text and worker is not None and core is not None):
            return
        if not core.wants_inference(now):
            return
        item = self._inference_input(core, now)
        if item is not None:
            worker.submit_frame(item, instruction)

    def _inference_input(self, core: ControlCore, now: float) -> Frame | None:
        """The primary frame alone (one camera, no proprio), else every camera's newest frame with the
        proprio vector; None while a camera has no fresh frame (HOLD names it) or the proprio is stale."""
        frames = list(self._frames)
        if not frames or any(f is None for f in frames):
            return None
        if len(frames) == 1 and not self._proprio_spec.dim:
            return frames[0]
        if core.stale_camera(now) is not None:
            return None
        try:
            proprio = current_proprio(self._proprio_spec, self._joints, core.pose, now,
                                      self.config.safety.max_pose_age_s)
        except ProprioError as exc:
            text = self._errors.set("proprio", f"no inference: {exc}", now)
            self._log_throttled("proprio", text)
            return None
        self._errors.resolve("proprio")
        return MultiFrame(tuple(frames), tuple(c.topic for c in self._cameras), proprio)

    def _on_held_instruction(self, raw: bytes) -> None:
        """Role policy: the instruction in force that the control half holds (transient local) when this
        node starts; used only until a live one arrives."""
        if not self._instruction_seen:
            self._on_instruction(raw)

    def _on_instruction(self, raw: bytes) -> None:
        """Checked once here (size, UTF-8, the model's prompt positions); an unusable one means HOLD."""
        now = self._now()
        self._instruction_seen = True
        try:
            text = decode_instruction(raw, self._check)
        except ValueError as exc:
            repeated, self._rejected_raw = self._rejected_raw == raw, raw
            self._reject("instruction", exc, log=not repeated)  # the same message again: not logged
            text, usable = "", False
        else:
            self._errors.resolve("instruction")
            self._rejected_raw = b""
            usable = True
        core = self.core
        if core is None or not core.on_instruction(text, now):
            return
        self._instruction = Instruction(text, now)
        held = self._held_instruction_pub
        if held is not None:  # role control: for a policy half that (re)starts later
            held.publish(String(data=text))
        if usable:
            self._log_instruction(text)
        if not text:
            if self.worker is not None:
                self.worker.clear()
        else:
            self._maybe_infer(now)  # the new instruction reaches the very next call

    def _on_estop(self, msg: Bool) -> None:
        if msg.data and self.core is not None:
            if not self.core.estopped:
                self.get_logger().error("E-STOP latched: HOLD until ~/reset_estop")
            self.core.estop()

    def _on_pose(self, msg: PoseStamped) -> None:
        try:
            pose = pose_from_msg(msg, self._now())
        except ValueError as exc:
            self._reject("pose", exc)
            return
        core = self.core
        if core is None:
            return
        if core.on_pose(pose):
            self._errors.resolve("pose", pose.stamp)  # a pose rejected earlier is no longer the last word
        else:
            self._reject("pose", ValueError(core.last_error))

    def _on_joint_states(self, msg: JointState) -> None:
        """The positions of the proprio joints, by name; a message lacking one is rejected."""
        now = self._now()
        try:
            positions = pick_joint_positions(msg.name, msg.position, self._proprio_spec.joints)
        except ProprioError as exc:
            self._reject("proprio", exc)
            return
        self._joints = (positions, now)
        self._errors.resolve("proprio", now)
