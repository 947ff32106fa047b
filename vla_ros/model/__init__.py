"""The dual-encoder VLA in PyTorch (Prismatic / OpenVLA family); knows nothing of ROS."""
