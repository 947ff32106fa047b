"""Tasks of the tabletop demo: instructions with varied phrasing, parsing, success detection."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from vla_ros.sim.world import COLOURS, SHAPES, WorldSpec, WorldState

TASK_KINDS: tuple[str, ...] = ("pick", "move")

PHRASINGS: dict[str, tuple[str, ...]] = {
    "pick": (
        "pick up the {target}",
        "pick the {target} up",
        "grab the {target}",
        "lift the {target}",
        "grasp the {target} and lift it",
        "pick up the {target} from the table",
    ),
    "move": (
        "move to the {target}",
        "go to the {target}",
        "reach the {target}",
        "move the gripper above the {target}",
        "hover over the {target}",
        "approach the {target}",
    ),
}

# Verbs that decide the kind when parsing free text; pick verbs are checked first.
_PICK_WORDS = ("pick", "grab", "lift", "grasp", "take")
_MOVE_WORDS = ("move", "go", "reach", "hover", "approach", "point")

MOVE_HOVER_ABOVE_TOP_M = 0.045  # "move to": fingertips this far above the object's top
MOVE_TOLERANCE_XY_M = 0.02  # "move to": largest horizontal distance that counts as arrived
MOVE_TOLERANCE_Z_M = 0.03  # "move to": largest distance from the hover height that counts


@dataclass(frozen=True)
class Task:
    """What an episode asks for: the kind, the index of the target object, the instruction text."""

    kind: str  # "pick" | "move"
    target: int
    instruction: str


def describe_target(state: WorldState, index: int) -> str:
    """"red cube"-style name of object `index`."""
    return state.objects[index].name


def instruction_corpus() -> list[str]:
    """Every instruction the demo tasks can produce (all kinds, phrasings, colours and shapes)."""
    return [template.format(target=f"{colour} {shape}")
            for templates in PHRASINGS.values() for template in templates
            for colour in COLOURS for shape in SHAPES]


def make_instruction(kind: str, target_name: str, rng: np.random.Generator | None = None,
                     phrasing: int | None = None) -> str:
    """An instruction for `kind` about `target_name`, phrasing chosen at random unless given."""
    templates = PHRASINGS[kind]
    if phrasing is None:
        phrasing = int(rng.integers(len(templates))) if rng is not None else 0
    return templates[phrasing % len(templates)].format(target=target_name)


# Every phrasing as a pattern, longest first: "pick up the {target} from the table" before
# "pick up the {target}".
_PHRASING_PATTERNS = [
    (kind, re.compile("^" + re.escape(t).replace(re.escape("{target}"), "(?P<target>.+)") + "$"))
    for kind, t in sorted(((k, t) for k, ts in PHRASINGS.items() for t in ts), key=lambda kt: -len(kt[1]))]


def parse_phrasing(text: str) -> tuple[str, str]:
    """(kind, target name) of an instruction in one of the PHRASINGS; ('', '') when none matches."""
    for kind, pattern in _PHRASING_PATTERNS:
        match = pattern.match(text.strip())
        if match:
            return kind, match.group("target")
    return "", ""


def instruction_kind(text: str) -> str:
    """The task kind ('pick' or 'move') of an instruction in one of the PHRASINGS, '' otherwise."""
    return parse_phrasing(text)[0]


def sample_task(state: WorldState, rng: np.random.Generator, kind: str | None = None,
                target: int | None = None) -> Task:
    """A random task on the scene (random kind, target and phrasing unless given)."""
    kind = kind if kind is not None else str(rng.choice(TASK_KINDS))
    if kind not in PHRASINGS:
        raise ValueError(f"unknown task kind {kind!r}; choose from {list(TASK_KINDS)}")
    target = int(rng.integers(len(state.objects))) if target is None else int(target)
    return Task(kind, target, make_instruction(kind, describe_target(state, target), rng))


def parse_instruction(text: str, state: WorldState) -> Task | None:
    """The task an instruction asks for in this scene, or None when it names no object here.

    The kind comes from the verb (pick/grab/lift/grasp/take before move/go/reach/...); the target is
    the object whose colour is named, narrowed by the shape when both are given.
    """
    words = re.findall(r"[a-z]+", text.lower())
    if any(w in _PICK_WORDS for w in words):
        kind = "pick"
    elif any(w in _MOVE_WORDS for w in words):
        kind = "move"
    else:
        return None
    colours = [w for w in words if w in COLOURS]
    shapes = [w for w in words if w in SHAPES or w.rstrip("s") in SHAPES]
    candidates = [i for i, o in enumerate(state.objects)
                  if (not colours or o.colour == colours[0])
                  and (not shapes or o.shape == shapes[0].rstrip("s") or o.shape == shapes[0])]
    if not (colours or shapes) or len(candidates) != 1:
        return None
    return Task(kind, candidates[0], text.strip())


def move_goal(state: WorldState, index: int) -> np.ndarray:
    """Where "move to" wants the fingertips: above the object's centre at hover height [3]."""
    obj = state.objects[index]
    return np.array([obj.position[0], obj.position[1], obj.position[2] + obj.size + MOVE_HOVER_ABOVE_TOP_M])


def is_success(task: Task, state: WorldState, spec: WorldSpec | None = None) -> bool:
    """Pick: the target is held and lifted; move: the fingertips hover above the target."""
    spec = spec or WorldSpec()
    if not 0 <= task.target < len(state.objects):
        return False
    if task.kind == "pick":
        obj = state.objects[task.target]
        return bool(state.held == task.target and obj.position[2] >= spec.lift_success_m)
    goal = move_goal(state, task.target)
    g = state.gripper_position
    return bool(math.hypot(*(g[:2] - goal[:2])) <= MOVE_TOLERANCE_XY_M
                and abs(g[2] - goal[2]) <= MOVE_TOLERANCE_Z_M and state.held < 0)
