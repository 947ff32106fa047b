"""The layer table of the README's "Layout" section, enforced over every module of the package.

Each layer imports only the layers listed for it (lower ones); no two modules import each other in a
circle; everything outside vla_ros/ros imports with rclpy and every ROS message package blocked.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "vla_ros"

# layer -> the layers its modules may import (itself included). The table, bottom up.
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "model": {"core", "model"},
    "runtime": {"core", "model", "runtime"},
    "control": {"core", "control"},
    "sim": {"core", "model", "runtime", "control", "sim"},
    "bag": {"core", "model", "runtime", "control", "bag"},
    "ros": {"core", "model", "runtime", "control", "sim", "bag", "ros", "msg"},
    "cli": {"core", "model", "runtime", "control", "sim", "bag", "ros", "cli"},
}

# Imported by nothing outside vla_ros/ros: the ROS client library and the message packages.
ROS_MODULES = ("rclpy", "rosidl_runtime_py", "rosidl_parser", "rpyutils", "builtin_interfaces",
               "std_msgs", "std_srvs", "sensor_msgs", "geometry_msgs", "diagnostic_msgs",
               "rcl_interfaces", "lifecycle_msgs", "rosgraph_msgs", "action_msgs",
               "unique_identifier_msgs", "launch", "launch_ros", "rosbag2_py", "vla_ros.msg")


def module_name(path: Path) -> str:
    """vla_ros/bag/io.py -> vla_ros.bag.io; a package's __init__ -> the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """The layer a module belongs to: its first sub-package, or `cli` for vla_ros.cli."""
    parts = module.split(".")
    if len(parts) == 1:
        return "core"  # the bare package: vla_ros/__init__.py
    return parts[1]


def package_imports(path: Path) -> set[str]:
    """Every vla_ros module that `path` imports, at the top or inside a function."""
    module = module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return {name for name in found if name == "vla_ros" or name.startswith("vla_ros.")}


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def known(name: str, modules: dict[str, Path]) -> str | None:
    """The module `name` refers to (dropping an imported attribute), or None for vla_ros.msg."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for i in package_imports(path) if (m := known(i, modules)) and m != name}
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """`a imports b` lines for every import that is not allowed by the table."""
    bad = []
    for module, targets in graph.items():
        allowed = ALLOWED.get(layer_of(module))
        if allowed is None:
            bad.append(f"{module}: not in any layer of the table")
            continue
        bad += [f"{module} ({layer_of(module)}) imports {t} ({layer_of(t)})"
                for t in sorted(targets) if layer_of(t) not in allowed]
    return bad


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of modules larger than one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_goes_up_the_table() -> None:
    graph = import_graph()
    assert len(graph) > 50  # the whole package was read
    bad = upward_imports(graph)
    assert not bad, "imports against the layer table:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    cycles = import_cycles(import_graph())
    assert not cycles, "modules that import each other in a circle:\n" + "\n".join(map(" -> ".join, cycles))


def test_checks_catch_a_violation() -> None:
    clean = import_graph()
    graph = {k: set(v) for k, v in clean.items()}
    graph["vla_ros.core.types"] = graph["vla_ros.core.types"] | {"vla_ros.ros.node"}
    graph["vla_ros.ros.node"] = graph["vla_ros.ros.node"] | {"vla_ros.core.types"}
    added = set(upward_imports(graph)) - set(upward_imports(clean))
    assert added == {"vla_ros.core.types (core) imports vla_ros.ros.node (ros)"}
    assert any({"vla_ros.core.types", "vla_ros.ros.node"} <= set(c) for c in import_cycles(graph))


BLOCKER = """
import importlib, importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{{name}} is blocked: this module must import without ROS")
for b in BLOCKED:
    sys.modules.pop(b, None)
sys.meta_path.insert(0, Block())
failed = []
for name in {modules!r}:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{{name}}: {{type(exc).__name__}}: {{exc}}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


@pytest.mark.slow
def test_everything_outside_ros_imports_without_ros() -> None:
    modules = [m for m in all_modules() if layer_of(m) != "ros"]
    assert "vla_ros.cli" in modules and "vla_ros.bag.replay" in modules
    script = BLOCKER.format(blocked=ROS_MODULES, modules=modules)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"need ROS outside vla_ros/ros:\n{result.stdout}{result.stderr}"


def test_the_blocker_blocks_ros() -> None:
    script = BLOCKER.format(blocked=ROS_MODULES, modules=["vla_ros.ros.qos"])
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "rclpy is blocked" in result.stdout
