"""The camera subscription: reliability chosen from the publishers (`auto`), transport losses counted.

`auto` follows the rosbag2 / `ros2 topic echo` rule: subscribe RELIABLE iff every publisher on the
topic offers reliable, BEST_EFFORT otherwise (a best-effort reader matches every publisher); with no
publisher yet, start reliable (what camera drivers publish). The publisher set is polled from a timer
(a local graph-cache query) and an incompatible-QoS event switches at once. Reliability cannot change
on a live subscription, so a switch destroys and re-creates it.

Counted for status/diagnostics: frames the middleware reports lost (message_lost event) and
incompatible-QoS events. Background and measured figures: README "Large images over DDS".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from rclpy.node import Node
from rclpy.qos import QoSPolicyKind, ReliabilityPolicy

try:  # Jazzy and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

from vla_ros.ros.qos import camera_qos

MODES = ("auto", "reliable", "best_effort")
POLL_S = 0.5  # publisher-set poll period of `auto` [s]
LOST_LOG_THROTTLE_S = 30.0
README_SECTION = "see README 'Large images over DDS'"


def choose_reliability(offers: Sequence[ReliabilityPolicy]) -> str:
    """`reliable` iff every offered reliability is RELIABLE (also when there is no publisher)."""
    return "reliable" if all(o == ReliabilityPolicy.RELIABLE for o in offers) else "best_effort"


def likely_cause(mode: str, reliability: str, lost: int, incompatible: int) -> str:
    """A one-line hint on why frames go missing; empty when nothing is lost or refused."""
    if incompatible and mode == "reliable":
        return ("a camera publisher offers best effort, which a reliable subscription never receives: "
                "set topics.camera_reliability to auto or best_effort")
    if lost and reliability == "best_effort":
        return ("large best-effort frames over Fast DDS shared memory (segment smaller than a frame): "
                "give the camera driver's process the SHM profile, " + README_SECTION)
    if lost:
        return "frames lost in transport, " + README_SECTION
    return ""


@dataclass(frozen=True)
class CameraLinkStats:
    """What the camera subscription reports to status/diagnostics."""

    mode: str  # the parameter: auto, reliable or best_effort
    reliability: str  # in use: reliable or best_effort
    publishers: int
    frames_lost: int
    incompatible_qos: int
    switches: int

    @property
    def hint(self) -> str:
        return likely_cause(self.mode, self.reliability, self.frames_lost, self.incompatible_qos)


class Offer(NamedTuple):
    """One publisher on the camera topic."""

    node: str
    reliability: ReliabilityPolicy
    gid: tuple[int, ...]


def _key(offers: Sequence[Offer]) -> tuple:
    """The publisher set, comparable between polls."""
    return tuple(sorted((o.gid, int(o.reliability)) for o in offers))


def _policy_name(kind: int) -> str:
    try:
        return QoSPolicyKind(kind).name.lower()
    except ValueError:
        return str(kind)


def _describe(offers: Sequence[Offer]) -> str:
    """The publishers' QoS for the log line."""
    if not offers:
        return "no publisher yet"
    return ", ".join(f"{o.node} {o.reliability.name.lower()}" for o in offers)


class CameraSubscription:
    """The camera subscription of `node`: `reliability` auto, reliable or best_effort; keep last `depth`."""

    def __init__(self, node: Node, topic: str, msg_type: type, callback: Callable[[object], None],
                 reliability: str = "auto", *, depth: int = 5, poll_s: float = POLL_S,
                 raw: bool = True) -> None:
        if reliability not in MODES:
            raise ValueError(f"camera reliability must be one of {MODES}, got {reliability!r}")
        self.mode = reliability
        self.lost = 0  # frames reported lost by the middleware (message_lost total_count_change)
        self.incompatible = 0  # incompatible-QoS events (publishers this subscription cannot match)
        self.switches = 0  # re-creations with another reliability (auto)
        self._node, self._topic, self._type, self._callback = node, topic, msg_type, callback
        self._depth, self._raw = depth, raw
        self._sub = None
        self._timer = None
        self._offers: tuple = ()  # ((gid, reliability), ...) of the last poll
        self.reliability = reliability
        if reliability == "auto":
            offers = self._poll_offers()
            self.reliability = choose_reliability([o.reliability for o in offers])
            self._offers = _key(offers)
            self._subscribe(f"auto: {_describe(offers)}")
            self._timer = node.create_timer(poll_s, self._on_poll)
        else:
            self._subscribe("parameter topics.camera_reliability")

    @property
    def topic_name(self) -> str:
        """The resolved topic name."""
        return self._sub.topic_name if self._sub is not None else self._topic

    def stats(self) -> CameraLinkStats:
        """Counters for status/diagnostics."""
        publishers = self._node.count_publishers(self._topic) if self._sub is not None else 0
        return CameraLinkStats(self.mode, self.reliability, publishers, self.lost, self.incompatible,
                               self.switches)

    def destroy(self) -> None:
        """Destroy the timer and the subscription (safe to call twice)."""
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._timer = None
        if self._sub is not None:
            self._node.destroy_subscription(self._sub)
            self._sub = None

    # ----- internals -----------------------------------------------------------------------------
    def _subscribe(self, why: str) -> None:
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible,
                                            message_lost=self._on_message_lost)
        self._sub = self._node.create_subscription(
            self._type, self._topic, self._callback, camera_qos(self.reliability, self._depth),
            event_callbacks=events, raw=self._raw)
        self._node.get_logger().info(f"camera '{self._sub.topic_name}': subscribing "
                                     f"{self.reliability.upper()}, keep last {self._depth} ({why})")

    def _switch(self, reliability: str, why: str) -> None:
        if self._sub is not None:
            self._node.destroy_subscription(self._sub)
        self.reliability = reliability
        self.switches += 1
        self._subscribe(why)

    def _poll_offers(self) -> list[Offer]:
        return [Offer(f"{i.node_namespace.rstrip('/')}/{i.node_name}", i.qos_profile.reliability,
                      tuple(i.endpoint_gid)) for i in self._node.get_publishers_info_by_topic(self._topic)]

    def _on_poll(self) -> None:
        if self._sub is None:
            return
        offers = self._poll_offers()
        key = _key(offers)
        if key == self._offers:  # the publisher set did not change: keep the choice
            return
        self._offers = key
        wanted = choose_reliability([o.reliability for o in offers])
        if wanted != self.reliability:
            self._switch(wanted, f"auto: publishers changed: {_describe(offers)}")

    def _on_incompatible(self, info) -> None:
        self.incompatible += info.total_count_change
        if self.mode == "auto" and self.reliability == "reliable":
            # Only a best-effort publisher is incompatible with a reliable volatile reader: switch now.
            offers = self._poll_offers()
            self._offers = _key(offers)
            self._switch("best_effort", f"auto: incompatible-QoS event; publishers: {_describe(offers)}")
        else:
            hint = likely_cause(self.mode, self.reliability, 0, 1) or "check `ros2 topic info -v`"
            self._node.get_logger().warning(
                f"camera '{self.topic_name}': a publisher offers incompatible QoS "
                f"(policy {_policy_name(info.last_policy_kind)}): {hint}",
                throttle_duration_sec=LOST_LOG_THROTTLE_S)

    def _on_message_lost(self, info) -> None:
        self.lost += info.total_count_change
        self._node.get_logger().warning(
            f"camera '{self.topic_name}': {self.lost} frames lost in transport so far: "
            f"{likely_cause(self.mode, self.reliability, self.lost, 0)}",
            throttle_duration_sec=LOST_LOG_THROTTLE_S)
