"""Rosbag replay, playback, recording and comparison (rosbags; no rclpy)."""
