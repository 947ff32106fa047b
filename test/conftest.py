"""Test-wide settings: DDS traffic stays on this machine, ROS logs stay in a temp dir."""

import os
import tempfile

# Must be set before rclpy is imported anywhere in the test session.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOCALHOST_ONLY"] = "1"  # older distributions (Humble) read this one
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
os.environ["ROS_HOME"] = tempfile.mkdtemp(prefix="vla_ros_test_ros_home_")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("OMP_NUM_THREADS", "1")
