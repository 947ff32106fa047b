"""NodeConfig <-> ROS 2 parameters: one declared parameter per config leaf, with its descriptor.

Names are the dotted config names (`control.control_rate_hz`), so a parameters file nests them
as YAML sections. Descriptors come from vla_ros.core.schema metadata: the help text (with units), a
FloatingPointRange for numbers with a range, the allowed choices for strings. All are read-only:
the node reads them when it is configured. Any invalid value raises ConfigError naming the
parameter and its allowed values; rclpy's own range check runs first, and the schema's check
(which also covers list elements and cross-field rules) runs when the values are read back.
"""

from __future__ import annotations

import array
import dataclasses
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import ParameterException, ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from vla_ros.core.config import NodeConfig
from vla_ros.core.schema import ConfigError, apply_overrides, check_value, iter_fields, validate

# A list field's element type, from its annotation: an empty default still declares the right array type.
_ARRAY_TYPES = {"list[str]": ParameterType.PARAMETER_STRING_ARRAY,
                "list[float]": ParameterType.PARAMETER_DOUBLE_ARRAY,
                "list[int]": ParameterType.PARAMETER_INTEGER_ARRAY}


def _parameter_type(value: Any, field: dataclasses.Field | None = None) -> int:
    declared = _ARRAY_TYPES.get(str(field.type)) if field is not None and isinstance(value, list) else None
    if declared is not None:
        return declared
    if isinstance(value, bool):
        return ParameterType.PARAMETER_BOOL
    if isinstance(value, int):
        return ParameterType.PARAMETER_INTEGER
    if isinstance(value, float):
        return ParameterType.PARAMETER_DOUBLE
    if isinstance(value, str):
        return ParameterType.PARAMETER_STRING
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value) and value:
            return ParameterType.PARAMETER_STRING_ARRAY
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value) and value:
            return ParameterType.PARAMETER_INTEGER_ARRAY
        return ParameterType.PARAMETER_DOUBLE_ARRAY
    raise TypeError(f"no ROS parameter type for {type(value).__name__}")


def describe_field(value: Any, field: dataclasses.Field) -> str:
    """One-line description: the help text, then the range or the choices."""
    meta = field.metadata
    text = meta.get("help", "")
    if meta.get("range") is not None:
        lo, hi = meta["range"]
        text += f" (range [{lo}, {hi}]{' per element' if isinstance(value, list) else ''})"
    if meta.get("choices") is not None:
        text += f" (one of: {', '.join(map(str, meta['choices']))})"
    return text


def parameter_descriptor(name: str, value: Any, field: dataclasses.Field) -> ParameterDescriptor:
    """The ParameterDescriptor of one config leaf (type, description, range, read-only)."""
    meta = field.metadata
    ptype = _parameter_type(value, field)
    desc = ParameterDescriptor(name=name, type=ptype, description=describe_field(value, field),
                               read_only=True)
    if meta.get("choices") is not None:
        desc.additional_constraints = "one of: " + ", ".join(map(str, meta["choices"]))
    rng = meta.get("range")
    if rng is not None:
        lo, hi = rng
        if ptype in (ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_DOUBLE_ARRAY):
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi),
                                                            step=0.0)]
        elif ptype in (ParameterType.PARAMETER_INTEGER, ParameterType.PARAMETER_INTEGER_ARRAY):
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
    return desc


def _coerce_overrides(node: Node, cfg: Any) -> None:
    """Let `50` stand for `50.0` in parameter files and --param (ROS would refuse the integer), and `[]`
    for a list whose default is empty."""
    overrides = getattr(node, "_parameter_overrides", None)
    if not isinstance(overrides, dict):
        return
    for name, value, field in iter_fields(cfg):
        given = overrides.get(name)
        if given is None:
            continue
        v = given.value
        if isinstance(value, float) and isinstance(v, int) and not isinstance(v, bool):
            overrides[name] = Parameter(name, Parameter.Type.DOUBLE, float(v))
        elif value == [] and isinstance(v, (list, array.array)) and not v:
            del overrides[name]  # the default anyway; rclpy would take [] for a byte array
        elif isinstance(value, list) and isinstance(v, (list, array.array)) and \
                _parameter_type(value, field) == ParameterType.PARAMETER_DOUBLE_ARRAY and \
                all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            overrides[name] = Parameter(name, Parameter.Type.DOUBLE_ARRAY, [float(x) for x in v])


def declare_config_parameters(node: Node, defaults: Any = None) -> None:
    """Declare every leaf of a schema instance (NodeConfig by default) on `node`; ConfigError when invalid."""
    cfg = validate(defaults if defaults is not None else NodeConfig())
    _coerce_overrides(node, cfg)
    for name, value, field in iter_fields(cfg):
        descriptor = parameter_descriptor(name, value, field)
        # rclpy types an empty list as a byte array: declare its type instead (unset = the default []).
        default = Parameter.Type(descriptor.type) if value == [] else value
        try:
            node.declare_parameter(name, default, descriptor)
        except ParameterException as exc:
            overrides = getattr(node, "_parameter_overrides", {}) or {}
            given = overrides[name].value if name in overrides else None
            if given is not None:
                check_value(name, given, field)  # raises the schema's message when it applies
                raise ConfigError(f"parameter '{name}' = {given!r}: {describe_field(value, field)}; "
                                  f"rejected by ROS: {exc}") from exc
            raise ConfigError(f"parameter '{name}': {exc}") from exc


def read_config_parameters(node: Node, schema: type = NodeConfig) -> Any:
    """The node's parameters as a validated `schema` instance; raises ConfigError naming a bad parameter."""
    values: dict[str, Any] = {}
    for name, _, _ in iter_fields(schema()):
        try:
            value = node.get_parameter(name).value
        except ParameterUninitializedException:  # an empty-list parameter nobody set: the default
            continue
        if isinstance(value, (array.array, tuple)):
            value = list(value)
        values[name] = value
    return apply_overrides(schema(), values)


def config_to_parameters(cfg: Any) -> list[Parameter]:
    """Every leaf of `cfg` as an rclpy Parameter (for Node(parameter_overrides=...))."""
    params = []
    for name, value, field in iter_fields(cfg):
        ptype = _parameter_type(value, field) if isinstance(value, list) else None
        if ptype == ParameterType.PARAMETER_STRING_ARRAY:
            params.append(Parameter(name, Parameter.Type.STRING_ARRAY, list(value)))
        elif isinstance(value, list):
            params.append(Parameter(name, Parameter.Type.DOUBLE_ARRAY, [float(v) for v in value]))
        else:
            params.append(Parameter(name, value=value))
    return params


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '""' if value == "" else f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return repr(value)


YAML_HEADER = """\
# vla_node parameters (ROS 2 parameters file). Every parameter, its unit and its allowed range.
#   ros2 run vla_ros vla_node --ros-args --params-file config/vla.yaml
#   ros2 launch vla_ros vla.launch.py config_file:=config/vla.yaml
#   vla-ros node --config config/vla.yaml --param control.control_rate_hz=50
# The values below are the defaults. All parameters are read-only once the node has started; an
# invalid value stops start-up with a message naming the parameter and its allowed range.
# Robot-specific safety limits: config/robots/*.yaml (launch argument robot:=NAME).
# Generated from the schema (vla_ros/core/config.py): python -m vla_ros.ros.params > config/vla.yaml
"""


def render_parameters_yaml(cfg: NodeConfig | None = None, node_name: str = "vla_node") -> str:
    """A ROS 2 parameters file of `cfg` with every parameter documented (source of config/vla.yaml)."""
    cfg = cfg if cfg is not None else NodeConfig()
    lines = YAML_HEADER.splitlines() + [f"{node_name}:", "  ros__parameters:"]
    section = None
    for name, value, field in iter_fields(cfg):
        head, leaf = name.split(".", 1)
        if head != section:
            section = head
            doc = (type(getattr(cfg, head)).__doc__ or "").strip().splitlines()[0]
            lines += ["", f"    # {doc}", f"    {head}:"]
        lines.append(f"      # {describe_field(value, field)}")
        lines.append(f"      {leaf}: {_yaml_scalar(value)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_parameters_yaml(), end="")
