"""QoS profiles of vla_node's topics, in one place.

- Camera: keep last 5, volatile, with the reliability of the driver's publisher (a reliable
  subscription never matches a best-effort publisher); `auto` (ros/camera.py) follows the publishers
  and starts reliable. Depth 5: depth 1 lost 30-60% of large reliable frames (repairs bunch up).
- Action chunks (split.chunk_topic): reliable, volatile, keep last 4. Reliable: a chunk lost on the
  wire is repaired when the network allows (a late one is rejected by its age on the control half);
  keep last 4: a burst after a stall does not queue old chunks (newer ones supersede them); volatile: a
  control half that (re)starts never gets old chunks replayed.
- Held instruction (`<split.chunk_topic>/instruction`): reliable, transient local, keep last 1; the
  control half publishes the instruction in force there on every change and every 0.2 s, and a
  policy half that (re)starts gets it (transient local alone can wait for a 3 s heartbeat).
- Commands, instruction, e-stop, pose, status, diagnostics: reliable, volatile, keep last 10.
  Volatile subscriptions match both volatile and transient-local publishers.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

_RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE,
                "auto": ReliabilityPolicy.RELIABLE}  # auto's starting point, before any publisher is seen


def camera_qos(reliability: str = "best_effort", depth: int = 5) -> QoSProfile:
    """QoS of the camera topic; `reliability` is best_effort, reliable or auto (= reliable here)."""
    if reliability not in _RELIABILITY:
        raise ValueError(f"camera reliability must be one of {sorted(_RELIABILITY)}, got {reliability!r}")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=_RELIABILITY[reliability], durability=DurabilityPolicy.VOLATILE)


def reliable_qos(depth: int = 10) -> QoSProfile:
    """Reliable, volatile, keep last `depth`: commands, instructions, e-stop, pose, status."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


CHUNK_DEPTH = 4


def chunk_qos() -> QoSProfile:
    """Reliable, volatile, keep last CHUNK_DEPTH: the action chunks between the policy and control halves."""
    return reliable_qos(CHUNK_DEPTH)


def latched_qos() -> QoSProfile:
    """Reliable, transient local, keep last 1: the last message a transient-local publisher holds."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
