"""Reading rosbag2 bags (mcap, sqlite3) through rosbags, with the vla_ros messages registered.

Every failure a user can cause (a missing or corrupt bag, an unknown storage plugin, a missing topic)
is raised as `BagError` with a message that names the bag, the topic and what would fix it.
The message helpers here (typestore, msg_class, serialize, ...) serve the writer (bag/writer.py) too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.errors import ReaderError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from vla_ros.core.files import share_candidates
from vla_ros.core.stamps import NS_PER_S, ns_to_seconds, seconds_to_ns  # noqa: F401 - re-exported

STORAGES = ("mcap", "sqlite3")  # the storage plugins rosbags reads and writes

# Message types, as rosbag2 spells them.
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"
BOOL = "std_msgs/msg/Bool"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
JOINT_STATE = "sensor_msgs/msg/JointState"
CLOCK = "rosgraph_msgs/msg/Clock"
END_EFFECTOR_COMMAND = "vla_ros/msg/EndEffectorCommand"
VLA_STATUS = "vla_ros/msg/VlaStatus"
ACTION_CHUNK = "vla_ros/msg/ActionChunk"  # every msg/*.msg is registered below; these are the ones we write


class BagError(RuntimeError):
    """A bag cannot be read or written; the message says which bag, what is wrong and what to do."""


# --------------------------------------------------------------------------------------------- types

def find_msg_dir() -> Path:
    """Directory of vla_ros's .msg files: the source checkout's msg/ or an installed share/vla_ros/msg."""
    candidates = share_candidates("msg")
    for cand in candidates:
        if (cand / "EndEffectorCommand.msg").is_file():
            return cand
    raise BagError("cannot find the vla_ros message definitions (EndEffectorCommand.msg); looked in "
                   + ", ".join(str(c) for c in candidates))


@lru_cache(maxsize=1)
def typestore() -> Any:
    """A rosbags typestore with the ROS 2 Kilted standard messages plus vla_ros/msg/* from msg/*.msg."""
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    for path in sorted(find_msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"vla_ros/msg/{path.stem}"))
    store.register(types)
    return store


def msg_class(msgtype: str) -> Any:
    """The rosbags dataclass of a message type, e.g. `msg_class(IMAGE)(header=..., ...)`."""
    try:
        return typestore().types[msgtype]
    except KeyError:
        raise BagError(f"message type {msgtype!r} is not known to the vla_ros typestore") from None


def serialize(msg: Any, msgtype: str | None = None) -> bytes:
    """CDR bytes of a rosbags message (the same bytes rclpy.serialization produces)."""
    return bytes(typestore().serialize_cdr(msg, msgtype or msg.__msgtype__))


def deserialize(raw: bytes | memoryview, msgtype: str) -> Any:
    """A rosbags message object from CDR bytes."""
    return typestore().deserialize_cdr(raw, msgtype)


def stamp_msg(t_ns: int) -> Any:
    """builtin_interfaces/Time from integer nanoseconds."""
    return msg_class("builtin_interfaces/msg/Time")(sec=int(t_ns // NS_PER_S), nanosec=int(t_ns % NS_PER_S))


def stamp_ns(stamp: Any) -> int:
    """Integer nanoseconds of a builtin_interfaces/Time."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def header_msg(t_ns: int, frame_id: str = "") -> Any:
    """std_msgs/Header with the given stamp."""
    return msg_class("std_msgs/msg/Header")(stamp=stamp_msg(t_ns), frame_id=frame_id)


def qos_profile(reliable: bool = True, depth: int = 10, transient_local: bool = False) -> Any:
    """A rosbags QoS record for offered_qos_profiles in metadata.yaml."""
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth,
               QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


# -------------------------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag: its type, message count and the definition stored with it."""

    name: str
    msgtype: str
    count: int
    msgdef: str  # ros2msg text ("" when the bag carries none)
    digest: str  # RIHS01 hash ("" when unknown)
    qos: tuple = ()  # rosbags Qos records offered by the recorded publishers


def _bag_label(path: Path) -> str:
    return f"bag {str(path)!r}"


def _read_metadata(path: Path) -> dict[str, Any] | None:
    """The rosbag2_bagfile_information mapping of a bag directory, or None for a bare storage file."""
    meta_path = path / "metadata.yaml"
    if not path.is_dir():
        return None
    if not meta_path.is_file():
        raise BagError(f"{_bag_label(path)} is a directory without metadata.yaml: not a rosbag2 bag "
                       "(or it was not closed; `ros2 bag reindex` can rebuild the metadata)")
    try:
        tree = yaml.safe_load(meta_path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BagError(f"{_bag_label(path)}: metadata.yaml is corrupt: {exc}") from None
    info = tree.get("rosbag2_bagfile_information") if isinstance(tree, dict) else None
    if not isinstance(info, dict):
        raise BagError(f"{_bag_label(path)}: metadata.yaml has no 'rosbag2_bagfile_information' "
                       "mapping (corrupt or not a rosbag2 bag)")
    return info


class BagReader:
    """Read-only view of a rosbag2 bag (directory with metadata.yaml, or a bare .mcap / .db3 file).

    Use as a context manager; `messages()` yields (topic, log time [ns], raw CDR bytes) in time order.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._reader: Any = None
        self.storage = ""
        self.topics: dict[str, TopicInfo] = {}
        self.start_ns = 0
        self.end_ns = 0
        self.message_count = 0

    def __enter__(self) -> BagReader:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Open the bag, translating every rosbags failure into a BagError that says what to do."""
        path = self.path
        if not path.exists():
            raise BagError(f"{_bag_label(path)} does not exist")
        meta = _read_metadata(path)
        if meta is not None:
            storage = meta.get("storage_identifier")
            if storage not in STORAGES:
                raise BagError(
                    f"{_bag_label(path)} uses storage plugin {storage!r}, which cannot be read here "
                    f"(readable: {', '.join(STORAGES)}); convert it on a ROS machine with "
                    "`ros2 bag convert` to mcap")
            self.storage = storage
        else:
            self.storage = {".mcap": "mcap", ".db3": "sqlite3"}.get(path.suffix, "")
            if not self.storage:
                raise BagError(f"{_bag_label(path)}: unknown file type {path.suffix!r}; expected a bag "
                               "directory, a .mcap or a .db3 file")
        try:
            reader = Reader(path)
            reader.open()
        except (ReaderError, OSError, ValueError, KeyError, IndexError, TypeError, AssertionError) as exc:
            raise BagError(f"{_bag_label(path)} is corrupt or unreadable ({self.storage}): {exc}") from None
        except Exception as exc:  # sqlite3.DatabaseError and other storage-level failures
            raise BagError(f"{_bag_label(path)} is corrupt or unreadable ({self.storage}): "
                           f"{type(exc).__name__}: {exc}") from None
        self._reader = reader
        self.start_ns = int(reader.start_time) if reader.message_count else 0
        self.end_ns = int(reader.end_time) - 1 if reader.message_count else 0
        self.message_count = int(reader.message_count)
        topics: dict[str, TopicInfo] = {}
        for conn in reader.connections:
            known = topics.get(conn.topic)
            qos = tuple(getattr(conn.ext, "offered_qos_profiles", ()) or ())
            if known is not None and known.msgtype != conn.msgtype:
                raise BagError(f"{_bag_label(path)}: topic {conn.topic} carries two types "
                               f"({known.msgtype}, {conn.msgtype}); not supported")
            count = conn.msgcount + (known.count if known else 0)
            topics[conn.topic] = TopicInfo(conn.topic, conn.msgtype, count, conn.msgdef.data or "",
                                           conn.digest or "", qos)
        self.topics = topics

    def close(self) -> None:
        """Close the bag (safe to call twice)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                reader.close()
            except Exception:  # noqa: BLE001 - closing a corrupt file must not mask the real error
                pass

    @property
    def duration_s(self) -> float:
        """Time between the first and the last message [s]."""
        return (self.end_ns - self.start_ns) / NS_PER_S

    def require(self, topic: str, msgtypes: Iterable[str], role: str = "") -> TopicInfo:
        """The topic's info; BagError listing the bag's topics when it is missing or of another type."""
        msgtypes = tuple(msgtypes)
        info = self.topics.get(topic)
        what = f"{role} topic {topic!r}" if role else f"topic {topic!r}"
        if info is None:
            listing = "\n".join(f"  {t.name}  [{t.msgtype}]  {t.count} msgs" for t in self.topics.values())
            raise BagError(f"{_bag_label(self.path)} has no {what}; its topics are:\n"
                           f"{listing or '  (none)'}\nchoose another with the config's topics.* "
                           "or --param topics.NAME=/topic")
        if info.msgtype not in msgtypes:
            raise BagError(f"{_bag_label(self.path)}: {what} has type {info.msgtype}, expected "
                           f"{' or '.join(msgtypes)}")
        return info

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, bytes]]:
        """Yield (topic, log time [ns], raw CDR) for the given topics (all when None), in time order."""
        if self._reader is None:
            raise BagError(f"{_bag_label(self.path)} is not open")
        wanted = None if topics is None else set(topics)
        conns = [c for c in self._reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        try:
            for conn, t_ns, raw in self._reader.messages(connections=conns):
                yield conn.topic, int(t_ns), bytes(raw)
        except BagError:
            raise
        except Exception as exc:  # a truncated chunk or a damaged database page, found mid-read
            raise BagError(f"{_bag_label(self.path)} is corrupt: reading failed after the start: "
                           f"{type(exc).__name__}: {exc}") from None


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The rosbag2_bagfile_information mapping of a bag directory (for checks and reports)."""
    info = _read_metadata(Path(path))
    if info is None:
        raise BagError(f"{_bag_label(Path(path))} is not a bag directory")
    return info
