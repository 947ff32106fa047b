"""Everything that imports rclpy: nodes, message conversion, QoS and parameters."""
