"""InferenceWorker: newest-only mailbox, faults on exceptions / NaN / hangs, recovery, undecoded frames
decoded by the worker and damaged ones rejected (no ROS)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_images import camera_jpeg, damage_scan

from vla_ros.core.images import CompressedFrame, ImageError
from vla_ros.core.types import Instruction, Observation
from vla_ros.runtime.synthetic import SyntheticPolicy, instruction_direction
from vla_ros.runtime.worker import InferenceWorker


class Recorder:
    """Collects the worker's callbacks."""

    def __init__(self) -> None:
        self.chunks = []
        self.faults: list[str | None] = []
        self.event = threading.Event()

    def on_chunk(self, chunk) -> None:
        self.chunks.append(chunk)
        self.event.set()

    def on_fault(self, reason) -> None:
        self.faults.append(reason)
        self.event.set()


def obs(stamp: float) -> Observation:
    return Observation(rgb=np.zeros((4, 4, 3), np.uint8), stamp=stamp)


def wait_for(pred, timeout: float = 3.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


@pytest.fixture
def make_worker():
    workers = []

    def make(policy, max_s=1.0, **kw):
        rec = Recorder()
        w = InferenceWorker(policy, rec.on_chunk, rec.on_fault, max_inference_s=max_s, **kw)
        w.start()
        workers.append((w, policy))
        return w, rec

    yield make
    for w, policy in workers:
        if hasattr(policy, "release"):
            policy.release()
        assert w.stop(2.0)


def test_chunk_carries_the_call_inputs(make_worker):
    policy = SyntheticPolicy(latency_s=0.0)
    w, rec = make_worker(policy)
    w.submit(obs(12.5), Instruction("pick up the cup", 1.0))
    assert wait_for(lambda: rec.chunks)
    chunk = rec.chunks[0]
    assert chunk.stamp == 12.5 and chunk.instruction == "pick up the cup"
    np.testing.assert_allclose(chunk.actions[0, :3], instruction_direction("pick up the cup") * 0.004)
    assert rec.faults == []


def test_only_newest_observation_runs(make_worker):
    policy = SyntheticPolicy(latency_s=0.2)
    w, rec = make_worker(policy)
    w.submit(obs(1.0), Instruction("a", 0.0))
    assert wait_for(lambda: policy.calls)  # first call is running
    for s in (2.0, 3.0, 4.0, 5.0):
        w.submit(obs(s), Instruction("a", 0.0))
    assert wait_for(lambda: len(rec.chunks) == 2)
    time.sleep(0.3)
    assert [c.stamp for c in rec.chunks] == [1.0, 5.0]
    assert w.stats.dropped == 3


@pytest.mark.parametrize("mode, words", [("raise", "raised RuntimeError"), ("nan", "NaN"),
                                         ("bad_shape", "[T>=1, 7]")])
def test_failures_fault_then_recover(make_worker, mode, words):
    policy = SyntheticPolicy(latency_s=0.0, mode=mode)
    w, rec = make_worker(policy)
    w.submit(obs(1.0), Instruction("a", 0.0))
    assert wait_for(lambda: rec.faults)
    assert words in rec.faults[0] and w.faulted and not rec.chunks
    assert w.stats.errors == 1
    policy.mode = "ok"
    w.submit(obs(2.0), Instruction("a", 0.0))
    assert wait_for(lambda: rec.chunks)
    assert rec.faults[-1] is None and not w.faulted
    assert rec.chunks[0].stamp == 2.0


def test_hang_reported_while_running_and_late_chunk_discarded(make_worker):
    policy = SyntheticPolicy(latency_s=0.0, mode="hang")
    w, rec = make_worker(policy, max_s=0.1)
    t0 = time.monotonic()
    w.submit(obs(1.0), Instruction("a", 0.0))
    assert wait_for(lambda: rec.faults, timeout=2.0)
    assert time.monotonic() - t0 < 1.0  # reported by the watchdog, not when the call returns
    assert "max_inference_s" in rec.faults[0] and w.busy_s > 0.0
    policy.mode = "ok"
    policy.release()  # the hung call returns late: its chunk must not be used
    assert wait_for(lambda: w.busy_s == 0.0)
    time.sleep(0.05)
    assert rec.chunks == [] and w.faulted
    w.submit(obs(2.0), Instruction("a", 0.0))
    assert wait_for(lambda: rec.chunks)
    assert rec.chunks[0].stamp == 2.0 and rec.faults[-1] is None


def test_slow_call_is_a_fault(make_worker):
    policy = SyntheticPolicy(latency_s=0.15)
    w, rec = make_worker(policy, max_s=0.05)
    w.submit(obs(1.0), Instruction("a", 0.0))
    assert wait_for(lambda: rec.faults)
    assert wait_for(lambda: w.busy_s == 0.0)
    assert rec.chunks == [] and w.stats.timeouts == 1


def test_callback_error_does_not_stop_worker():
    policy = SyntheticPolicy(latency_s=0.0)
    seen = []

    def bad_consumer(chunk):
        seen.append(chunk)
        raise ValueError("consumer bug")

    w = InferenceWorker(policy, bad_consumer, lambda r: None, max_inference_s=1.0)
    w.start()
    try:
        w.submit(obs(1.0), Instruction("a", 0.0))
        assert wait_for(lambda: len(seen) == 1)
        w.submit(obs(2.0), Instruction("a", 0.0))
        assert wait_for(lambda: len(seen) == 2)
        assert "consumer bug" in w.stats.last_error
    finally:
        assert w.stop()


def test_clear_drops_pending(make_worker):
    policy = SyntheticPolicy(latency_s=0.2)
    w, rec = make_worker(policy)
    w.submit(obs(1.0), Instruction("a", 0.0))
    assert wait_for(lambda: policy.calls)
    w.submit(obs(2.0), Instruction("a", 0.0))
    w.clear()
    time.sleep(0.4)
    assert [c.stamp for c in rec.chunks] == [1.0]


def test_synthetic_policy_rejects_unknown_modes():
    with pytest.raises(ValueError, match="busy"):
        SyntheticPolicy(busy="gpu")
    with pytest.raises(ValueError, match="mode"):
        SyntheticPolicy(mode="explode")


# ----- the policy in a child process -------------------------------------------------------------
def make_process_worker(tmp_path, max_s=1.0, latency_s=0.0, on_reject=None):
    from functools import partial

    from vla_ros.runtime.process_worker import ProcessInferenceWorker

    mode_file = tmp_path / "mode"
    mode_file.write_text("ok")
    rec = Recorder()
    factory = partial(SyntheticPolicy, latency_s=latency_s, mode_file=str(mode_file), hang_limit_s=30.0)
    w = ProcessInferenceWorker(factory, rec.on_chunk, rec.on_fault, max_inference_s=max_s, start_timeout_s=60,
                               on_reject=on_reject)
    return w, rec, mode_file


def test_process_worker_runs_policy_in_a_child(tmp_path):
    import os

    w, rec, _ = make_process_worker(tmp_path)
    w.start()
    try:
        assert "synthetic" in w.description
        assert w._process.pid != os.getpid()
        w.submit(obs(3.0), Instruction("stack the cups", 1.0))
        assert wait_for(lambda: rec.chunks, timeout=10.0)
        chunk = rec.chunks[0]
        assert chunk.stamp == 3.0 and chunk.instruction == "stack the cups"
        np.testing.assert_allclose(chunk.actions[0, :3], instruction_direction("stack the cups") * 0.004)
    finally:
        assert w.stop(3.0)
    assert w._process is None


def test_process_worker_faults_and_recovers(tmp_path):
    w, rec, mode_file = make_process_worker(tmp_path)
    w.start()
    try:
        for mode, words in (("raise", "RuntimeError"), ("nan", "NaN")):
            mode_file.write_text(mode)
            w.submit(obs(1.0), Instruction("a", 0.0))
            assert wait_for(lambda: rec.faults and rec.faults[-1] is not None, 10.0)
            assert words in rec.faults[-1]
            mode_file.write_text("ok")
            w.submit(obs(2.0), Instruction("a", 0.0))
            assert wait_for(lambda: rec.faults[-1] is None, 10.0)
        assert len(rec.chunks) == 2 and w.restarts == 0
    finally:
        w.stop(3.0)


def test_process_worker_kills_a_hung_policy_and_rebuilds_it(tmp_path):
    w, rec, mode_file = make_process_worker(tmp_path, max_s=0.3)
    w.start()
    try:
        first_pid = w._process.pid
        mode_file.write_text("hang")
        w.submit(obs(1.0), Instruction("a", 0.0))
        assert wait_for(lambda: rec.faults, 5.0)
        assert "max_inference_s" in rec.faults[0]
        assert wait_for(lambda: w.busy_s == 0.0, 5.0)  # the blocked call ended when the child was killed
        mode_file.write_text("ok")
        w.submit(obs(2.0), Instruction("a", 0.0))
        assert wait_for(lambda: rec.chunks, 20.0)
        assert rec.chunks[0].stamp == 2.0 and rec.faults[-1] is None
        assert w.restarts == 1 and w._process.pid != first_pid
    finally:
        w.stop(3.0)


def test_process_worker_reports_a_factory_that_fails():
    from functools import partial

    from vla_ros.runtime.process_worker import PolicyProcessError, ProcessInferenceWorker

    w = ProcessInferenceWorker(partial(SyntheticPolicy, busy="gpu"), lambda c: None, lambda r: None,
                               start_timeout_s=60)
    with pytest.raises(PolicyProcessError, match="building the policy failed: ValueError"):
        w.start()


# ----- undecoded frames: decoded by the worker, newest only, damaged ones rejected ---------------
class FakeFrame:
    """A frame whose decode() is recorded; `bad` frames raise like a damaged JPEG."""

    def __init__(self, stamp: float, decoded: list[float], bad: bool = False) -> None:
        self.stamp, self._decoded, self._bad = stamp, decoded, bad

    def decode(self) -> Observation:
        self._decoded.append(self.stamp)
        if self._bad:
            raise ImageError("corrupt JPEG: Corrupt JPEG data: premature end of data segment")
        return obs(self.stamp)


def test_newer_frame_replaces_an_undecoded_older_one(make_worker):
    policy = SyntheticPolicy(latency_s=0.2)
    w, rec = make_worker(policy)
    decoded: list[float] = []
    w.submit_frame(FakeFrame(1.0, decoded), Instruction("a", 0.0))
    assert wait_for(lambda: policy.calls)  # frame 1 is decoded and its call is running
    for s in (2.0, 3.0, 4.0, 5.0):
        w.submit_frame(FakeFrame(s, decoded), Instruction("a", 0.0))
    assert wait_for(lambda: len(rec.chunks) == 2)
    time.sleep(0.3)
    assert decoded == [1.0, 5.0]  # the replaced frames were never decoded
    assert [c.stamp for c in rec.chunks] == [1.0, 5.0] and w.stats.dropped == 3


def test_bad_frame_is_rejected_never_reaches_policy_and_next_good_frame_runs(make_worker):
    policy = SyntheticPolicy(latency_s=0.0)
    rejects: list[tuple[str, Exception]] = []
    w, rec = make_worker(policy, on_reject=lambda kind, exc: rejects.append((kind, exc)))
    decoded: list[float] = []
    w.submit_frame(FakeFrame(1.0, decoded, bad=True), Instruction("a", 0.0))
    assert wait_for(lambda: rejects)
    assert rejects[0][0] == "image" and isinstance(rejects[0][1], ImageError)
    assert w.stats.rejected == 1 and policy.calls == [] and rec.faults == [] and not w.faulted
    w.submit_frame(FakeFrame(2.0, decoded), Instruction("a", 0.0))
    assert wait_for(lambda: rec.chunks)
    assert policy.calls == [("a", 2.0)] and rec.chunks[0].stamp == 2.0 and w.stats.rejected == 1


def test_real_damaged_jpeg_frame_is_rejected(make_worker):
    policy = SyntheticPolicy(latency_s=0.0)
    rejects: list[Exception] = []
    w, rec = make_worker(policy, on_reject=lambda kind, exc: rejects.append(exc))
    jpeg = camera_jpeg(0)
    w.submit_frame(CompressedFrame.checked("jpeg", damage_scan(jpeg, "zero"), 1.0), Instruction("a", 0.0))
    assert wait_for(lambda: rejects)
    assert "corrupt JPEG" in str(rejects[0]) and policy.calls == []
    w.submit_frame(CompressedFrame.checked("jpeg", jpeg, 2.0), Instruction("a", 0.0))
    assert wait_for(lambda: rec.chunks) and policy.calls == [("a", 2.0)]


def test_worker_reports_the_policy_input_size():
    class Sized(SyntheticPolicy):
        input_size = 224

    assert InferenceWorker(Sized(), lambda c: None, lambda r: None).input_size == 224
    assert InferenceWorker(SyntheticPolicy(), lambda c: None, lambda r: None).input_size is None


def test_process_worker_decodes_in_the_parent_and_rejects_bad_frames(tmp_path):
    rejects: list[Exception] = []
    w, rec, _ = make_process_worker(tmp_path, on_reject=lambda kind, exc: rejects.append(exc))
    w.start()
    try:
        decoded: list[float] = []
        w.submit_frame(FakeFrame(1.0, decoded, bad=True), Instruction("a", 0.0))
        assert wait_for(lambda: rejects, 10.0)
        w.submit_frame(FakeFrame(2.0, decoded), Instruction("a", 0.0))
        assert wait_for(lambda: rec.chunks, 10.0)
        assert decoded == [1.0, 2.0] and [c.stamp for c in rec.chunks] == [2.0] and rec.faults == []
        assert w.input_size is None  # the synthetic policy has no model input size
    finally:
        assert w.stop(3.0)
