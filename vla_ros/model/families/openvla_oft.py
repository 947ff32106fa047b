"""OpenVLA-OFT: OpenVLA's model and prompt, parallel decoding of action chunks (moojink/openvla-oft).

Chosen by name from a converted checkpoint's vla_settings.json (`vla-ros convert`), which also holds
the chunk, action and proprio dimensions, cameras and FiLM; the sequence and head are in model/oft.py.
"""

from vla_ros.model.families.base import Family, register_family
from vla_ros.model.families.openvla import OPENVLA

OPENVLA_OFT = register_family(Family(
    name="openvla-oft",
    description="OpenVLA-OFT: OpenVLA with one bidirectional pass per action chunk (L1 head or discrete)",
    llm_classes=OPENVLA.llm_classes,
    prompt_template=OPENVLA.prompt_template,
    add_bos=True,
    bos_token="<s>",
    trailing_token="\u2581",
    action_mapping="last_ids",
    aliases=("oft",),
    explicit_only=True,
))
