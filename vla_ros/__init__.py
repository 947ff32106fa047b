"""vla_ros: a dual-encoder vision-language-action model on a robot arm, through ROS 2."""

# The generated messages (vla_ros.msg) may live in another directory of the same package name
# (site-packages of a pip-only setup); extend the package path so both halves import.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__version__ = "0.1.0"
