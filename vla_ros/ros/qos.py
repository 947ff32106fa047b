"""QoS profiles of vla_node's topics, in one place.

- Camera: the sensor-data profile (keep last 5, volatile) with the reliability of the driver's
  publisher (a reliable subscription never matches a best-effort publisher).
- Commands, instruction, e-stop, pose, status, diagnostics: reliable, volatile, keep last 10.
  Volatile subscriptions match both volatile and transient-local publishers.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

_RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


def camera_qos(reliability: str = "best_effort", depth: int = 5) -> QoSProfile:
    """Sensor-data QoS for the camera subscription; `reliability` is best_effort or reliable."""
    if reliability not in _RELIABILITY:
        raise ValueError(f"camera reliability must be one of {sorted(_RELIABILITY)}, got {reliability!r}")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=_RELIABILITY[reliability], durability=DurabilityPolicy.VOLATILE)


def reliable_qos(depth: int = 10) -> QoSProfile:
    """Reliable, volatile, keep last `depth`: commands, instructions, e-stop, pose, status."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
