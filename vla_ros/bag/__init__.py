"""Rosbag replay, comparison and bag IO (rosbags; no rclpy, no simulator).

io: read bags (mcap, sqlite3), with the vla_ros messages registered; writer: write bags atomically;
replay: the `vla-ros replay` CLI; replayer: the replay itself (inputs -> ControlCore + simulated worker);
replay_inputs / replay_outputs / replay_types / latency: its inputs, output files, data and latency
models; compare: per-DoF regression checks; plot: the replay PNG; commands: command series and CSV;
convert: bag messages to vla_ros types; chunk_msgs: vla_ros/ActionChunk messages (split and control-only
replay); make_bag: bag generator; bench_replay: replay speed against real time. Live playback and
recording are in vla_ros/ros/.
"""
