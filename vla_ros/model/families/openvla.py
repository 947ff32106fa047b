"""OpenVLA / Prismatic with a Llama LLM (openvla/openvla-7b and its fine-tunes)."""

from vla_ros.model.families.base import Family, register_family

OPENVLA = register_family(Family(
    name="openvla",
    description="OpenVLA / Prismatic: DINOv2 + SigLIP, fused GELU MLP, Llama 2; last 256 ids are actions",
    llm_classes={"llama": "transformers:LlamaForCausalLM"},
    prompt_template="In: What action should the robot take to {instruction}?\nOut:",
    add_bos=True,
    bos_token="<s>",
    trailing_token="\u2581",  # "▁" (Llama id 29871), appended when the prompt does not end with it
    action_mapping="last_ids",
    aliases=("prismatic",),
))
