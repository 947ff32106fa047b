#!/usr/bin/env bash
# Builds msg/ into the virtual environment given as $1 (pip-only ROS 2 wheels, no system ROS).
# The wheels' exported CMake files name the wheel build host's Python paths; point them at this
# venv first (idempotent), then run a plain CMake build that installs only the messages.
set -euo pipefail
venv=$(cd "$1" && pwd)
py="$venv/bin/python"
top=$(cd "$(dirname "$0")/.." && pwd)
build="$top/build/msgs"
mkdir -p "$build"

py_inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$("$py" -c 'import numpy; print(numpy.get_include())')
{ grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+/' "$venv/share" --include='*.cmake' 2>/dev/null || true; } |
  while read -r f; do
    sed -i -E \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${py_inc}#g" \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${np_inc}#g" \
      "$f"
  done

export AMENT_PREFIX_PATH="$venv"
cmake -S "$top" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$py" \
  -DBUILD_TESTING=OFF -DVLA_ROS_INSTALL_PYTHON=OFF >"$build.log" 2>&1 ||
  { tail -n 30 "$build.log"; exit 1; }
cmake --build "$build" -j2 >>"$build.log" 2>&1 || { tail -n 30 "$build.log"; exit 1; }
cmake --install "$build" >>"$build.log" 2>&1 || { tail -n 30 "$build.log"; exit 1; }
# The generated package's empty __init__.py would shadow the source tree (found later on sys.path
# through the editable install); without it that directory is a portion that vla_ros/__init__.py
# adds to its __path__.
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ -f "$site/vla_ros/__init__.py" ] && [ ! -s "$site/vla_ros/__init__.py" ]; then
  rm -f "$site/vla_ros/__init__.py"
fi
echo "messages installed into $venv"
