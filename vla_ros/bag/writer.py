"""Writing rosbag2 bags (mcap, sqlite3) atomically: built under a hidden temporary name, then renamed.

A bag appears at its target path only after the storage file and metadata.yaml are complete; the
same inputs give byte-identical files (timestamps come only from the caller).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.errors import WriterError

from vla_ros.bag.io import STORAGES, BagError, serialize, typestore


def _replace_dir(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move the finished directory `tmp` to `target`; an existing target is replaced only if allowed."""
    if target.exists():
        if not overwrite:
            raise BagError(f"{str(target)!r} exists already; choose another path or allow overwriting")
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, trash / target.name)
        os.replace(tmp, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, target)


class AtomicDir:
    """A directory built under a hidden temporary name and renamed to `target` only when complete.

    `with AtomicDir(target) as tmp:` write into `tmp`; an exception leaves nothing at `target`.
    """

    def __init__(self, target: str | Path, overwrite: bool = False):
        self.target = Path(target)
        self.overwrite = overwrite
        self._holder: Path | None = None
        self.path: Path | None = None

    def __enter__(self) -> Path:
        if self.target.exists() and not self.overwrite:
            raise BagError(f"{str(self.target)!r} exists already; choose another path or allow overwriting")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._holder = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        self.path = self._holder / self.target.name  # the final name inside, so file names match
        self.path.mkdir()
        return self.path

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self._holder is not None and self.path is not None
        try:
            if exc_type is None:
                _replace_dir(self.path, self.target, self.overwrite)
        finally:
            shutil.rmtree(self._holder, ignore_errors=True)


class BagWriter:
    """Write a rosbag2 bag (mcap or sqlite3, metadata.yaml version 9) atomically.

    Message definitions (ros2msg text) and RIHS01 hashes are embedded for every topic, taken from
    the caller (copying a topic from another bag) or from the vla_ros typestore.
    Timestamps come only from the caller, so the same inputs give byte-identical files.
    """

    def __init__(self, path: str | Path, storage: str = "mcap", overwrite: bool = False,
                 custom_data: dict[str, str] | None = None, atomic: bool = True):
        if storage not in STORAGES:
            raise BagError(f"storage {storage!r} is not supported; choose one of {', '.join(STORAGES)}")
        self.path = Path(path)
        self.storage = storage
        self.custom_data = dict(custom_data or {})
        self._atomic = AtomicDir(self.path, overwrite) if atomic else None
        self._writer: Any = None
        self._conns: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc_type, exc, tb)

    def open(self) -> None:
        """Create the temporary bag directory and open the storage."""
        if self._atomic is not None:
            inner = self._atomic.__enter__()
            inner.rmdir()  # rosbags creates the directory itself
        else:
            inner = self.path
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        try:
            self._writer = Writer(inner, version=9, storage_plugin=plugin)
            for key, value in sorted(self.custom_data.items()):
                self._writer.set_custom_data(key, str(value))
            self._writer.open()
        except (WriterError, OSError) as exc:
            self.abort(type(exc), exc, None)
            raise BagError(f"cannot create bag {str(self.path)!r}: {exc}") from None

    def add_topic(self, topic: str, msgtype: str, msgdef: str = "", digest: str = "",
                  qos: Iterable[Any] = ()) -> None:
        """Declare a topic; msgdef/digest default to the typestore's (they must come together)."""
        if topic in self._conns:
            return
        kwargs: dict[str, Any] = {"offered_qos_profiles": list(qos)}
        if msgdef and digest:
            kwargs.update(msgdef=msgdef, rihs01=digest)
        else:
            if msgtype not in typestore().types:
                raise BagError(f"cannot write topic {topic}: type {msgtype} has no definition in the source "
                               "and is not known to the vla_ros typestore")
            kwargs["typestore"] = typestore()
        self._conns[topic] = self._writer.add_connection(topic, msgtype, **kwargs)
        self.counts[topic] = 0

    def write(self, topic: str, t_ns: int, raw: bytes | memoryview) -> None:
        """Append one raw CDR message at log time t_ns (the topic must have been added)."""
        try:
            conn = self._conns[topic]
        except KeyError:
            raise BagError(f"topic {topic} was not added to bag {str(self.path)!r}") from None
        self._writer.write(conn, int(t_ns), raw)
        self.counts[topic] += 1

    def write_msg(self, topic: str, t_ns: int, msg: Any) -> None:
        """Serialize a rosbags message and append it (the topic is added on first use)."""
        if topic not in self._conns:
            self.add_topic(topic, msg.__msgtype__)
        self.write(topic, t_ns, serialize(msg))

    def close(self) -> None:
        """Finish the storage file and metadata.yaml, then rename the bag into place."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.close()
        except Exception as exc:
            self.abort(type(exc), exc, None)
            raise BagError(f"cannot finish bag {str(self.path)!r}: {exc}") from None
        if self._atomic is not None:
            self._atomic.__exit__(None, None, None)
            self._atomic.path = None

    def abort(self, exc_type: Any = RuntimeError, exc: Any = None, tb: Any = None) -> None:
        """Drop everything written so far; nothing appears at the target path."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.abort()
            except Exception:  # noqa: BLE001 - already failing; the temporary files are removed below
                pass
        if self._atomic is not None and self._atomic.path is not None:
            self._atomic.__exit__(exc_type or RuntimeError, exc, tb)
            self._atomic.path = None
