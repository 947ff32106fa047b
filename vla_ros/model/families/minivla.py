"""MiniVLA (Stanford-ILIAD openvla-mini): the same towers and projector with Qwen2.5-0.5B.

Qwen has no BOS token: the prompt is Qwen's chat format and the patches go after its first token
(`<|im_start|>`), as in Prismatic. Actions are the 256 added `<|extra_i|>` tokens at the end of the
tokenizer (len(tokenizer) - 256 .. len(tokenizer) - 1). No trailing token is appended.
"""

from vla_ros.model.families.base import Family, register_family

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

MINIVLA = register_family(Family(
    name="minivla",
    description="MiniVLA: DINOv2 + SigLIP, fused GELU MLP, Qwen2.5-0.5B; <|extra_i|> tokens are actions",
    llm_classes={"qwen2": "transformers:Qwen2ForCausalLM"},
    prompt_template=(f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\n"
                     "What action should the robot take to {instruction}?<|im_end|>\n"
                     "<|im_start|>assistant\n"),
    add_bos=False,
    trailing_token=None,
    action_mapping="extra_tokens",
    aliases=("openvla-mini",),
))
