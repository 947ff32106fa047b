#!/usr/bin/env bash
# The whole suite: lint, then unit, ROS (real rclpy + Fast DDS on localhost) and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -p no:cacheprovider test "$@"
