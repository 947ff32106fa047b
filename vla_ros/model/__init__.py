"""The dual-encoder VLA in PyTorch (Prismatic / OpenVLA family); knows nothing of ROS.

config.py (config.json) -> families/ (LLM class, prompt, action ids) -> loader.py (safetensors shards,
meta-device build, key/shape checks) -> vla.py (VlaModel: vision.py towers + projector.py + the
transformers LM) -> llm.py (LmCore: lean KV-cached forward) -> stages.py (vision / embed / prefill /
decode modules with flat tensor I/O, run by the torch backend and exported to ONNX).
preprocess.py (numpy image pipeline), tokenizer.py, action_tokenizer.py, normalization.py;
tiny.py writes random checkpoints in the released layout.
"""
