"""`vla-ros demo` (`make demo`): the closed loop over real ROS topics with the tabletop simulator.

vla_sim (camera, end-effector pose, command execution) and vla_node (policy -> scheduler -> safety
filter -> commands, armed through ~/arm) run as ROS 2 nodes over Fast DDS on this machine. For each
episode the simulator is reset to a new seeded scene, an instruction about one of its objects is
published (pick-up and move-to in turn, random target and phrasing), and the episode ends at
`sim/success` or the time limit with an empty instruction (HOLD).
Outputs, under --out (default build/demo):

    bag/           mcap rosbag: camera, instruction, commands, status, pose, sim/success, sim/task
    commands.png   the 7-DoF commands of one episode (the first successful one)
    summary.json   per-episode results, success rate, bag topic counts, settings

    vla-ros demo [--episodes 5] [--seed 0] [--policy model|expert] [--checkpoint DIR] [--no-bag]
    vla-ros demo --attach ...   drive vla_sim and vla_node already running (launch/demo.launch.py)

Exit status: 0 when the demo ran (whatever the success rate), 2 for bad arguments or a missing
model, 1 when the graph fails (a node does not start, a service does not answer, the bag fails),
130 when interrupted. The ROS-free parts (arguments, summary, plot) live here; every rclpy call is
in vla_ros.ros.demo_driver.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.core.schema import ConfigError
from vla_ros.sim.tasks import PHRASINGS, TASK_KINDS, make_instruction

DEFAULT_OUT = Path("build") / "demo"
BAG_DIR = "bag"
PLOT_FILE = "commands.png"
SUMMARY_FILE = "summary.json"
NS_PER_S = 1_000_000_000
READY_TIMEOUT_S = 120.0  # model loading on a busy 2-core machine included
PLOT_MARGIN_S = 0.3  # commands shown before the instruction of the plotted episode


# ----------------------------------------------------------------------------------------------- pure parts
def default_config_path() -> Path:
    """config/demo.yaml of the source tree, or of an installed share/vla_ros."""
    candidates = [Path(__file__).resolve().parents[2] / "config" / "demo.yaml"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "vla_ros" / "config" / "demo.yaml")
    candidates.append(Path(sys.prefix) / "share" / "vla_ros" / "config" / "demo.yaml")
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError("cannot find config/demo.yaml (looked in " + ", ".join(map(str, candidates)) + ")")


# Longest phrasing first: "pick up the {target} from the table" before "pick up the {target}".
_PATTERNS = [(kind, re.compile("^" + re.escape(t).replace(re.escape("{target}"), "(?P<target>.+)") + "$"))
             for kind, t in sorted(((k, t) for k, ts in PHRASINGS.items() for t in ts),
                                   key=lambda kt: -len(kt[1]))]
TASK_CHOICES = ("alternate", "any", "pick", "move")


def parse_task(text: str) -> tuple[str, str]:
    """(kind, target name) of a simulator instruction; ('', '') when it matches no phrasing."""
    for kind, pattern in _PATTERNS:
        match = pattern.match(text.strip())
        if match:
            return kind, match.group("target")
    return "", ""


def instruction_kind(text: str) -> str:
    """The task kind ('pick' or 'move') of a simulator instruction, '' when it matches no phrasing."""
    return parse_task(text)[0]


def wanted_kind(task: str, index: int) -> str | None:
    """The task kind episode `index` (1-based) asks for: alternate = pick, move, pick, ...; any = None."""
    if task == "alternate":
        return TASK_KINDS[(index - 1) % len(TASK_KINDS)]
    return None if task == "any" else task


def episode_instruction(reset_instruction: str, kind: str | None, rng: np.random.Generator) -> str:
    """The instruction to publish: the simulator's own, or one of `kind` about the same target.

    vla_sim takes an instruction naming an object of its scene as the new task, so asking for the
    other kind about the same object changes the episode's task.
    """
    found, target = parse_task(reset_instruction)
    if kind is None or found == kind or not target:
        return reset_instruction
    return make_instruction(kind, target, rng)


def summarize(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Successes and success rate, overall and per task kind."""
    def row(group: list[dict[str, Any]]) -> dict[str, Any]:
        wins = sum(bool(e["success"]) for e in group)
        return {"episodes": len(group), "successes": wins,
                "success_rate": wins / len(group) if group else 0.0,
                "mean_seconds_to_success": (float(np.mean([e["seconds"] for e in group if e["success"]]))
                                            if wins else None)}

    kinds = sorted({e["kind"] for e in episodes})
    return {"all": row(episodes), "by_kind": {k: row([e for e in episodes if e["kind"] == k]) for k in kinds}}


def plotted_episode(episodes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The episode whose commands are plotted: the first successful one, else the first."""
    return next((e for e in episodes if e["success"]), episodes[0] if episodes else None)


def plot_episode(path: Path, episode: dict[str, Any], stamps_ns: np.ndarray, values: np.ndarray,
                 hold: np.ndarray, interventions: np.ndarray, instructions: list[tuple[int, str]],
                 policy: str) -> None:
    """PNG of the episode's commands (vla_ros.bag.plot), time relative to its instruction."""
    from vla_ros.bag.plot import plot_replay

    t0 = int(episode["start_ns"])
    verdict = f"success in {episode['seconds']:.1f} s" if episode["success"] else episode["reason"]
    title = f"demo episode {episode['index']}: '{episode['instruction']}' - {verdict} ({policy[:80]})"
    plot_replay(path, (np.asarray(stamps_ns, np.int64) - t0) / NS_PER_S, values, hold, interventions,
                [((t - t0) / NS_PER_S, text) for t, text in instructions], title=title)


def plot_from_bag(bag_path: Path, png: Path, episode: dict[str, Any], command_topic: str,
                  instruction_topic: str, settle_s: float, policy: str) -> int:
    """Plot one episode's commands as recorded in the bag; returns the number of commands plotted."""
    from vla_ros.bag.commands import read_command_topic
    from vla_ros.bag.io import STRING, BagReader, deserialize

    lo = int(episode["start_ns"]) - int(PLOT_MARGIN_S * NS_PER_S)
    hi = int(episode["end_ns"]) + int(settle_s * NS_PER_S)
    with BagReader(bag_path) as bag:
        series = read_command_topic(bag, command_topic)
        instructions = []
        if instruction_topic in bag.topics:
            instructions = [(t, deserialize(raw, STRING).data)
                            for _, t, raw in bag.messages([instruction_topic]) if lo <= t <= hi]
    keep = (series.stamps_ns >= lo) & (series.stamps_ns <= hi)
    plot_episode(png, episode, series.stamps_ns[keep], series.values[keep], series.hold[keep],
                 series.interventions[keep], instructions, policy)
    return int(keep.sum())


def bag_topic_counts(bag_path: Path) -> dict[str, dict[str, Any]]:
    """{topic: {type, count}} of a bag, read with the project's reader."""
    from vla_ros.bag.io import BagReader

    with BagReader(bag_path) as bag:
        return {name: {"type": info.msgtype, "count": info.count}
                for name, info in sorted(bag.topics.items())}


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=False, default=_json_default) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def prepare_ros_environment(attach: bool) -> None:
    """Keep DDS traffic on this machine; pick a domain unless the user chose one (before rclpy loads).

    With --attach the user's graph settings (domain, discovery range) are left as they are.
    """
    if attach:
        return
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_LOCALHOST_ONLY"] = "1"  # older distributions (Humble) read this one
    if not os.environ.get("ROS_DOMAIN_ID"):
        os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)  # 1..100: clear of the default 0
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


# ----------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla-ros demo", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:4]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=5, help="number of episodes (default 5)")
    p.add_argument("--seed", type=int, default=0,
                   help="simulator seed: episode i (1, 2, ...) gets scene seed+i (default 0)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument("--policy", choices=("model", "expert"), default="model",
                   help="model: the VLA (default); expert: the scripted expert inside vla_node (checks the "
                        "loop itself)")
    p.add_argument("--checkpoint", default="", help="checkpoint directory; empty = the embedded demo model")
    p.add_argument("--config", default="", help="vla_node parameters (default config/demo.yaml)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override one vla_node parameter, e.g. safety.max_linear_velocity_mps=0.1")
    p.add_argument("--task", choices=TASK_CHOICES, default="alternate",
                   help="task kind of the episodes: alternate (pick, move, pick, ...; default), any (the "
                        "simulator's random choice), pick or move")
    p.add_argument("--max-seconds-per-episode", type=float, default=10.0,
                   help="time limit of an episode [s] (default 10)")
    p.add_argument("--settle-seconds", type=float, default=0.5,
                   help="HOLD time after each episode before the next reset [s] (default 0.5)")
    p.add_argument("--camera-rate-hz", type=float, default=10.0, help="simulator camera rate (default 10)")
    p.add_argument("--no-bag", action="store_true", help="do not record a rosbag (the plot comes from the "
                                                         "commands the driver received)")
    p.add_argument("--inference-process", action="store_true",
                   help="run the model in a child process (the control loop never waits for its GIL)")
    p.add_argument("--attach", action="store_true",
                   help="drive vla_sim and vla_node that are already running (launch/demo.launch.py)")
    p.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S,
                   help="seconds to wait for the graph, model loading included "
                        f"(default {READY_TIMEOUT_S:g})")
    p.add_argument("--verbose", action="store_true", help="show the nodes' ROS log output (INFO)")
    return p


def check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments, or None."""
    if not 1 <= args.episodes <= 10_000:
        return "--episodes must be between 1 and 10000"
    if not (0 <= args.seed < 2**31):
        return "--seed must be in [0, 2^31)"
    for name in ("max_seconds_per_episode", "ready_timeout"):
        value = getattr(args, name)
        if not (np.isfinite(value) and 0 < value <= 3600):
            return f"--{name.replace('_', '-')} must be in (0, 3600] seconds"
    if not (np.isfinite(args.settle_seconds) and 0 <= args.settle_seconds <= 60):
        return "--settle-seconds must be in [0, 60]"
    if not (np.isfinite(args.camera_rate_hz) and 1.0 <= args.camera_rate_hz <= 100.0):
        return "--camera-rate-hz must be in [1, 100]"
    if args.attach and (args.policy == "expert" or args.checkpoint):
        return "--attach drives nodes already running: --policy expert and --checkpoint do not apply"
    return None


def load_demo_config(args: argparse.Namespace):  # -> NodeConfig
    """config/demo.yaml (or --config) with --param and --checkpoint applied, validated."""
    from vla_ros.core.config import load_config
    from vla_ros.ros.node_main import parse_param

    overrides = dict(parse_param(p) for p in args.param)
    if args.checkpoint:
        overrides["policy.checkpoint"] = args.checkpoint
    cfg = load_config(args.config or default_config_path(), overrides)
    if not cfg.topics.pose:
        raise ConfigError("the demo needs 'topics.pose' (the simulator's end-effector pose topic)")
    if cfg.topics.output_mode != "end_effector":
        raise ConfigError("the demo needs 'topics.output_mode' = 'end_effector' (what vla_sim executes)")
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vla-ros demo`."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    problem = check_args(args)
    if problem:
        print(f"vla-ros demo: {problem}", file=sys.stderr)
        return 2
    try:
        cfg = load_demo_config(args)
        if args.policy == "model" and not args.attach:
            from vla_ros.model.spec import CheckpointError
            from vla_ros.runtime.factory import resolve_checkpoint

            try:
                resolve_checkpoint(cfg.policy.checkpoint)
            except CheckpointError as exc:
                raise ConfigError(str(exc)) from exc
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
    except (ConfigError, OSError) as exc:
        print(f"vla-ros demo: {exc}", file=sys.stderr)
        return 2
    prepare_ros_environment(args.attach)
    try:
        from vla_ros.ros import demo_driver  # noqa: F401 - rclpy and the generated vla_ros messages
    except ImportError as exc:
        print(f"vla-ros demo: needs ROS 2 (rclpy) and the vla_ros messages ({exc}); run `make setup`, or "
              "source a ROS 2 install where vla_ros is built", file=sys.stderr)
        return 2
    from vla_ros.ros.node_main import DEFAULT_SWITCH_INTERVAL_S

    sys.setswitchinterval(DEFAULT_SWITCH_INTERVAL_S)  # the control thread waits less for busy threads
    return Demo(args, cfg, out).run()


class Demo:
    """One run of the demo: graph, recorder, episodes, outputs."""

    def __init__(self, args: argparse.Namespace, cfg, out: Path) -> None:  # noqa: ANN001 - NodeConfig
        self.args = args
        self.cfg = cfg
        self.out = out
        self.bag_path = out / BAG_DIR
        self.episodes: list[dict[str, Any]] = []
        self.policy = ""
        self.errors: list[str] = []
        self.timings: dict[str, float] = {}
        self.bag_written = False  # this run's recorder closed its bag

    def log(self, text: str) -> None:
        print(f"[demo] {text}", flush=True)

    def run(self) -> int:
        from vla_ros.ros import demo_driver as ros

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
            import rclpy

            if args.attach:
                context = rclpy.Context()
                rclpy.init(args=ros.ros_args(args.verbose), context=context)
            else:
                graph = ros.InProcessGraph(ros.GraphOptions(
                    cfg, seed=args.seed, task_kind=args.task if args.task in TASK_KINDS else "",
                    camera_rate_hz=args.camera_rate_hz, expert=args.policy == "expert",
                    inference_process=args.inference_process, verbose=args.verbose))
                graph.start(self.log)
                context = graph.context
            driver = ros.EpisodeDriver(context, cfg, log=self.log, seed=None if args.attach else args.seed)
            if not args.no_bag:
                recorder = ros.RecorderProcess(str(self.bag_path), self.bag_topics(driver),
                                               max_seconds=self.recorder_limit_s())
            driver.wait_ready(args.ready_timeout)
            if recorder is not None:
                recorder.wait_recording(self.required_bag_topics(driver), 30.0)
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
        except ros.GraphError as exc:
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
                except ros.GraphError as exc:
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
    def bag_topics(self, driver) -> list[str]:  # noqa: ANN001
        """Absolute names of what the bag records."""
        from vla_ros.ros.demo_driver import SUCCESS_TOPIC, TASK_TOPIC, VLA_NODE

        t = self.cfg.topics
        names = [t.camera, t.instruction, t.command, f"{VLA_NODE}/status", t.pose, SUCCESS_TOPIC, TASK_TOPIC]
        return [driver.node.resolve_topic_name(n) for n in names]

    def required_bag_topics(self, driver) -> list[str]:  # noqa: ANN001
        """Topics the recording must have before the first episode (their publishers exist by then)."""
        return self.bag_topics(driver)[:5]

    def recorder_limit_s(self) -> float:
        """A bound after which an orphaned recorder stops by itself (never reached in a normal run)."""
        a = self.args
        return a.ready_timeout + a.episodes * (a.max_seconds_per_episode + a.settle_seconds + 15.0) + 120.0

    def run_episodes(self, driver) -> None:  # noqa: ANN001 - EpisodeDriver
        args = self.args
        n = args.episodes
        for i in range(1, n + 1):
            rng = np.random.default_rng([args.seed, i])  # phrasing when the kind is changed
            choose = functools.partial(episode_instruction, kind=wanted_kind(args.task, i), rng=rng)
            outcome = driver.run_episode(i, args.max_seconds_per_episode, args.settle_seconds,
                                         instruction=choose, progress=self._progress, progress_period_s=2.0)
            outcome.kind = instruction_kind(outcome.instruction)
            record = asdict(outcome)
            self.episodes.append(record)
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
        table = summarize(self.episodes)
        wins, total = table["all"]["successes"], table["all"]["episodes"]
        parts = [f"{k} {r['successes']}/{r['episodes']}" for k, r in table["by_kind"].items()]
        print(f"success rate: {wins}/{total} ({100.0 * wins / total:.0f}%)   " + ", ".join(parts), flush=True)

    def _progress(self, t: float, status) -> None:  # noqa: ANN001 - VlaStatus | None
        if status is None:
            print(f"        {t:4.1f} s  (no status from vla_node yet)", flush=True)
            return
        print(f"        {t:4.1f} s  {status.state_name:<8} model {status.model_rate_hz:4.1f} Hz  "
              f"latency {1e3 * status.inference_latency_s:5.1f} ms  commands {status.commands_published}",
              flush=True)

    def write_outputs(self, commands, status: int) -> int:  # noqa: ANN001 - CommandLog | None
        """Plot, summary JSON and the closing report; returns the exit status (1 when outputs fail)."""
        cfg, args = self.cfg, self.args
        bag_info: dict[str, Any] | None = None
        plot_info: dict[str, Any] | None = None
        recorded = self.bag_written and (self.bag_path / "metadata.yaml").is_file()
        try:
            if recorded:
                bag_info = {"path": str(self.bag_path), "storage": "mcap",
                            "topics": bag_topic_counts(self.bag_path)}
            episode = plotted_episode(self.episodes)
            if episode is not None:
                png = self.out / PLOT_FILE
                if recorded:
                    from vla_ros.bag.replay import resolve_topic

                    n = plot_from_bag(self.bag_path, png, episode, resolve_topic(cfg.topics.command),
                                      resolve_topic(cfg.topics.instruction), args.settle_seconds, self.policy)
                    source = "bag"
                elif commands is not None:
                    lo = int(episode["start_ns"]) - int(PLOT_MARGIN_S * NS_PER_S)
                    hi = int(episode["end_ns"]) + int(args.settle_seconds * NS_PER_S)
                    stamps, values, hold, interventions = commands.window(lo, hi)
                    marks = [(int(episode["start_ns"]), episode["instruction"]), (int(episode["end_ns"]), "")]
                    plot_episode(png, episode, stamps, values, hold, interventions, marks, self.policy)
                    n, source = len(stamps), "driver"
                else:
                    n, source = 0, ""
                if source:
                    plot_info = {"path": str(png), "episode": episode["index"], "commands": n,
                                 "source": source}
        except Exception as exc:  # noqa: BLE001 - a broken output is a real error, reported with its cause
            self.errors.append(f"writing outputs failed: {type(exc).__name__}: {exc}")
            print(f"vla-ros demo: error: {self.errors[-1]}", file=sys.stderr, flush=True)
            status = 1
        summary = summarize(self.episodes) if self.episodes else None
        payload = {
            "summary": summary, "episodes": self.episodes, "policy": self.policy,
            "settings": {"episodes": args.episodes, "seed": args.seed, "policy": args.policy,
                         "task": args.task, "checkpoint": cfg.policy.checkpoint or "(embedded demo model)",
                         "config": args.config or str(default_config_path()), "params": args.param,
                         "max_seconds_per_episode": args.max_seconds_per_episode,
                         "settle_seconds": args.settle_seconds, "camera_rate_hz": args.camera_rate_hz,
                         "control_rate_hz": cfg.control.control_rate_hz,
                         "action_period_s": cfg.control.action_period_s,
                         "inference_process": args.inference_process, "attach": args.attach,
                         "ros_domain_id": os.environ.get("ROS_DOMAIN_ID", "0")},
            "bag": bag_info, "plot": plot_info, "timings": self.timings, "errors": self.errors,
        }
        summary_path = self.out / SUMMARY_FILE
        try:
            write_json(summary_path, payload)
        except OSError as exc:
            print(f"vla-ros demo: error: cannot write {summary_path}: {exc}", file=sys.stderr)
            return 1
        print("outputs:", flush=True)
        if bag_info is not None:
            total = sum(t["count"] for t in bag_info["topics"].values())
            print(f"  bag      {self.bag_path}/  (mcap, {total} messages on {len(bag_info['topics'])} "
                  f"topics; `vla-ros replay {self.bag_path}` replays it offline)")
        if plot_info is not None:
            print(f"  plot     {plot_info['path']}  (episode {plot_info['episode']}, "
                  f"{plot_info['commands']} commands)")
        print(f"  summary  {summary_path}", flush=True)
        return status


if __name__ == "__main__":
    sys.exit(main())
