"""Rosbag replay, comparison and bag IO (rosbags; no rclpy).

io: read/write rosbag2 bags (mcap, sqlite3) atomically, with the vla_ros messages registered;
replay: `vla-ros replay`; compare: per-DoF regression checks; plot: the replay PNG;
commands: command series and CSV; convert: bag messages to vla_ros types; make_bag: bag generator;
bench_replay: replay speed against real time. Live playback and recording are in vla_ros/ros/.
"""
