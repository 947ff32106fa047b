"""Defaults that meet the control target: execution.* in the schema, config/*.yaml and the launch files,
and the inference worker's fallback to a thread where no child process can be started."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from vla_ros.core.config import ExecutionConfig, NodeConfig, load_config
from vla_ros.core.schema import iter_fields
from vla_ros.runtime import factory
from vla_ros.runtime.process_worker import ProcessInferenceWorker
from vla_ros.runtime.synthetic import SyntheticPolicy

ROOT = Path(__file__).resolve().parents[2]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), ROOT / "launch" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # must not need launch / launch_ros
    return module


def test_child_process_and_realtime_priority_are_the_defaults():
    e = ExecutionConfig()
    assert e.inference_process is True
    assert 1 <= e.control_priority <= 99 and 0 < e.inference_nice <= 19


def test_shipped_config_holds_every_default():
    """config/vla.yaml is generated from the schema: regenerate it after changing a default."""
    shipped = {name: value for name, value, _ in iter_fields(load_config(ROOT / "config" / "vla.yaml"))}
    defaults = {name: value for name, value, _ in iter_fields(NodeConfig())}
    assert shipped == defaults


def test_demo_config_keeps_the_execution_defaults():
    assert load_config(ROOT / "config" / "demo.yaml").execution == ExecutionConfig()


def test_launch_files_keep_the_config_execution_values():
    vla = load("vla.launch.py")
    demo = load("demo.launch.py")
    expected = {f"execution.{k}": v for k, v in vars(ExecutionConfig()).items()}
    for args in ({}, {"config_file": str(ROOT / "config" / "vla.yaml")},
                 demo.vla_launch_arguments(demo.resolve({}))):
        params = vla.node_settings(args)["parameters"]
        assert {k: params[k] for k in expected} == expected, args
    forced = vla.node_settings(demo.vla_launch_arguments(demo.resolve({"inference_process": "false"})))
    assert forced["parameters"]["execution.inference_process"] is False


def test_this_machine_can_start_a_child_process():
    assert factory.child_process_support() is None


def test_no_child_processes_means_a_thread_and_one_warning(monkeypatch):
    monkeypatch.setattr(factory, "child_process_support", lambda: "OSError: no semaphores here")
    monkeypatch.setattr(factory, "_fallback_warned", False)
    warnings: list[str] = []
    cfg = NodeConfig().policy
    workers = [factory.start_worker(cfg, lambda chunk: None, lambda reason: None, in_process=True,
                                    policy_factory=SyntheticPolicy, warn=warnings.append) for _ in range(2)]
    try:
        assert all(not isinstance(w, ProcessInferenceWorker) and isinstance(w.policy, SyntheticPolicy)
                   for w in workers)
        assert len(warnings) == 1
        assert "no semaphores here" in warnings[0] and "thread" in warnings[0]
    finally:
        for w in workers:
            w.stop(1.0)


def test_an_injected_policy_stays_in_a_thread_silently(monkeypatch):
    monkeypatch.setattr(factory, "child_process_support", lambda: pytest.fail("no check needed"))
    warnings: list[str] = []
    policy = SyntheticPolicy()
    worker = factory.start_worker(NodeConfig().policy, lambda chunk: None, lambda reason: None,
                                  in_process=True, policy=policy, warn=warnings.append)
    try:
        assert worker.policy is policy and not warnings
    finally:
        worker.stop(1.0)
