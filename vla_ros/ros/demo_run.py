"""One run of `vla-ros demo`: the graph (in-process or attached), the recorder, the episodes, the outputs."""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import rclpy

from vla_ros.core.config import NodeConfig
from vla_ros.core.files import write_json
from vla_ros.msg import VlaStatus
from vla_ros.ros.demo_driver import (
    SUCCESS_TOPIC,
    TASK_TOPIC,
    VLA_NODE,
    CommandLog,
    EpisodeDriver,
    GraphError,
    GraphOptions,
    InProcessGraph,
    ros_args,
)
from vla_ros.ros.demo_outputs import (
    BAG_DIR,
    PLOT_FILE,
    SUMMARY_FILE,
    bag_topic_counts,
    plot_from_bag,
    plot_from_log,
    print_outputs,
)
from vla_ros.ros.demo_recorder import RecorderProcess
from vla_ros.ros.node_main import DEFAULT_SWITCH_INTERVAL_S
from vla_ros.sim.demo import (
    default_config_path,
    episode_instruction,
    episode_summary,
    plotted_episode,
    success_line,
    wanted_kind,
)
from vla_ros.sim.tasks import TASK_KINDS, instruction_kind

RECORDED_BEFORE_START = 5  # the first bag topics (camera .. pose) must be recorded before episode 1


def run_demo(args: argparse.Namespace, cfg: NodeConfig, out: Path) -> int:
    """Run the demo of checked arguments and configuration; returns the exit status."""
    sys.setswitchinterval(DEFAULT_SWITCH_INTERVAL_S)  # the control thread waits less for busy threads
    return DemoRun(args, cfg, out).run()


class DemoRun:
    """One run of the demo: graph, recorder, episodes, outputs."""

    def __init__(self, args: argparse.Namespace, cfg: NodeConfig, out: Path) -> None:
        self.args = args
        self.cfg = cfg
        self.out = out
        self.bag_path = out / BAG_DIR
        self.episodes: list[dict[str, Any]] = []
        self.policy = ""
        self.errors: list[str] = []
        self.timings: dict[str, float] = {}
        self.bag_written = False  # this run's recorder closed its bag
        self.topics: dict[str, str] = {}  # what the bag records: role -> absolute topic name

    def log(self, text: str) -> None:
        print(f"[demo] {text}", flush=True)

    def run(self) -> int:
        args, cfg = self.args, self.cfg
        t_start = time.monotonic()
        where = ("attached to the running vla_sim and vla_node" if args.attach
                 else "vla_sim + vla_node in-process")
        self.log(f"{args.episodes} episodes, seed {args.seed}, policy {args.policy}, {where}; "
                 f"ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')}")
        graph = recorder = driver = None
        context = None
        status, interrupted, armed = 0, False, False
        try:
            if args.attach:
                context = rclpy.Context()
                rclpy.init(args=ros_args(args.verbose), context=context)
            else:
                graph = InProcessGraph(GraphOptions(
                    cfg, seed=args.seed, task_kind=args.task if args.task in TASK_KINDS else "",
                    camera_rate_hz=args.camera_rate_hz, expert=args.policy == "expert",
                    inference_process=args.inference_process, verbose=args.verbose))
                graph.start(self.log)
                context = graph.context
            driver = EpisodeDriver(context, cfg, seed=None if args.attach else args.seed)
            self.topics = self.bag_topics(driver)
            if not args.no_bag:
                recorder = RecorderProcess(str(self.bag_path), list(self.topics.values()),
                                           max_seconds=self.recorder_limit_s())
            driver.wait_ready(args.ready_timeout)
            if recorder is not None:
                recorder.wait_recording(list(self.topics.values())[:RECORDED_BEFORE_START], 30.0)
            self.policy = driver.statuses[-1][1].backend if driver.statuses else ""
            driver.arm(True)
            armed = True
            self.timings["startup_s"] = round(time.monotonic() - t_start, 2)
            self.log(f"graph ready in {self.timings['startup_s']:.1f} s; vla_node ARMED; "
                     f"policy: {self.policy}")
            self.log(f"control {cfg.control.control_rate_hz:g} Hz, action period "
                     f"{cfg.control.action_period_s:g} s, camera {args.camera_rate_hz:g} Hz, "
                     f"limit {args.max_seconds_per_episode:g} s per episode")
            t_episodes = time.monotonic()
            try:
                self.run_episodes(driver)
            except KeyboardInterrupt:
                interrupted = True
                self.log("interrupted: HOLD, then writing what was recorded")
            self.timings["episodes_s"] = round(time.monotonic() - t_episodes, 2)
            driver.say("")
            armed = False
            driver.arm(False)
            if recorder is not None:
                time.sleep(0.3)  # the final HOLD reaches the bag
                recorder, stopping = None, recorder
                stopping.stop()
                self.bag_written = True
        except GraphError as exc:
            self.errors.append(str(exc))
            print(f"vla-ros demo: error: {exc}", file=sys.stderr, flush=True)
            status = 1
        except KeyboardInterrupt:
            interrupted = True
        except Exception as exc:  # a bug: say so, and still write what there is
            traceback.print_exc()
            self.errors.append(f"{type(exc).__name__}: {exc}")
            status = 1
        finally:
            if driver is not None and armed:  # an error or Ctrl-C mid-run: never leave the node armed
                try:
                    driver.say("")
                    driver.arm(False)
                except Exception as exc:  # noqa: BLE001 - the graph may be gone; report and go on
                    self.errors.append(f"could not disarm vla_node: {exc}")
            if recorder is not None:
                try:
                    recorder.stop(10.0)
                    self.bag_written = True  # what was recorded before the failure
                except GraphError as exc:
                    self.errors.append(str(exc))
            if driver is not None:
                commands = driver.commands
                driver.close()
            else:
                commands = None
            if graph is not None:
                graph.close()
            elif context is not None and context.ok():
                rclpy.shutdown(context=context)
        status = self.write_outputs(commands, status)
        self.timings["total_s"] = round(time.monotonic() - t_start, 2)
        return 130 if interrupted and status == 0 else status

    # ----- pieces ---------------------------------------------------------------------------------------
    def bag_topics(self, driver: EpisodeDriver) -> dict[str, str]:
        """What the bag records, role -> absolute name (as the driver resolves it)."""
        t = self.cfg.topics
        names = {"camera": t.camera, "instruction": t.instruction, "command": t.command,
                 "status": f"{VLA_NODE}/status", "pose": t.pose, "success": SUCCESS_TOPIC, "task": TASK_TOPIC}
        return {role: driver.node.resolve_topic_name(name) for role, name in names.items()}

    def recorder_limit_s(self) -> float:
        """A bound after which an orphaned recorder stops by itself (never reached in a normal run)."""
        a = self.args
        return a.ready_timeout + a.episodes * (a.max_seconds_per_episode + a.settle_seconds + 15.0) + 120.0

    def run_episodes(self, driver: EpisodeDriver) -> None:
        args = self.args
        n = args.episodes
        for i in range(1, n + 1):
            rng = np.random.default_rng([args.seed, i])  # phrasing when the kind is changed
            choose = functools.partial(episode_instruction, kind=wanted_kind(args.task, i), rng=rng)
            outcome = driver.run_episode(i, args.max_seconds_per_episode, args.settle_seconds,
                                         instruction=choose, progress=self.progress, progress_period_s=2.0)
            outcome.kind = instruction_kind(outcome.instruction)
            self.episodes.append(asdict(outcome))
            seed = f", scene seed {outcome.scene_seed}" if outcome.scene_seed is not None else ""
            mark = "ok  " if outcome.success else "FAIL"
            extra = (f"in {outcome.seconds:.1f} s" if outcome.success
                     else f"({outcome.reason}, {outcome.seconds:.1f} s)")
            errors = f", {outcome.policy_errors} policy errors: {outcome.last_error[:80]}" \
                if outcome.policy_errors else ""
            if not outcome.task_confirmed:
                errors += "; warning: vla_sim did not confirm this task on sim/task"
            print(f"[{i:>2}/{n}] {mark} {outcome.instruction!r} ({outcome.kind or '?'}{seed}) {extra}; "
                  f"{outcome.commands} commands, {outcome.safety_interventions} safety-limited, model "
                  f"{outcome.model_rate_hz:.1f} Hz{errors}", flush=True)
        print(success_line(episode_summary(self.episodes)), flush=True)

    def progress(self, t: float, status: VlaStatus | None) -> None:
        """A progress line during an episode, from vla_node's latest status."""
        if status is None:
            print(f"        {t:4.1f} s  (no status from vla_node yet)", flush=True)
            return
        print(f"        {t:4.1f} s  {status.state_name:<8} model {status.model_rate_hz:4.1f} Hz  "
              f"latency {1e3 * status.inference_latency_s:5.1f} ms  commands {status.commands_published}",
              flush=True)

    def write_plot(self, commands: CommandLog | None, recorded: bool) -> dict[str, Any] | None:
        """commands.png of the plotted episode, from the bag when recorded; its summary entry."""
        episode = plotted_episode(self.episodes)
        if episode is None:
            return None
        png, settle_s = self.out / PLOT_FILE, self.args.settle_seconds
        if recorded:
            n = plot_from_bag(self.bag_path, png, episode, self.topics["command"], self.topics["instruction"],
                              settle_s, self.policy)
            source = "bag"
        elif commands is not None:
            n, source = plot_from_log(png, episode, commands, settle_s, self.policy), "driver"
        else:
            return None
        return {"path": str(png), "episode": episode["index"], "commands": n, "source": source}

    def write_outputs(self, commands: CommandLog | None, status: int) -> int:
        """Plot, summary JSON and the closing report; returns the exit status (1 when outputs fail)."""
        cfg, args = self.cfg, self.args
        bag_info: dict[str, Any] | None = None
        plot_info: dict[str, Any] | None = None
        recorded = self.bag_written and (self.bag_path / "metadata.yaml").is_file()
        try:
            if recorded:
                bag_info = {"path": str(self.bag_path), "storage": "mcap",
                            "topics": bag_topic_counts(self.bag_path)}
            plot_info = self.write_plot(commands, recorded)
        except Exception as exc:  # noqa: BLE001 - a broken output is a real error, reported with its cause
            self.errors.append(f"writing outputs failed: {type(exc).__name__}: {exc}")
            print(f"vla-ros demo: error: {self.errors[-1]}", file=sys.stderr, flush=True)
            status = 1
        payload = {
            "summary": episode_summary(self.episodes) if self.episodes else None,
            "episodes": self.episodes, "policy": self.policy,
            "settings": {"episodes": args.episodes, "seed": args.seed, "policy": args.policy,
                         "task": args.task, "checkpoint": cfg.policy.checkpoint or "(embedded demo model)",
                         "config": args.config or str(default_config_path()), "params": args.param,
                         "max_seconds_per_episode": args.max_seconds_per_episode,
                         "settle_seconds": args.settle_seconds, "camera_rate_hz": args.camera_rate_hz,
                         "control_rate_hz": cfg.control.control_rate_hz,
                         "action_period_s": cfg.control.action_period_s,
                         "inference_process": bool(args.policy == "model" and (
                             args.inference_process or cfg.execution.inference_process)),
                         "attach": args.attach,
                         "ros_domain_id": os.environ.get("ROS_DOMAIN_ID", "0")},
            "bag": bag_info, "plot": plot_info, "timings": self.timings, "errors": self.errors,
        }
        summary_path = self.out / SUMMARY_FILE
        try:
            write_json(summary_path, payload)
        except OSError as exc:
            print(f"vla-ros demo: error: cannot write {summary_path}: {exc}", file=sys.stderr)
            return 1
        print_outputs(self.bag_path, bag_info, plot_info, summary_path)
        return status
