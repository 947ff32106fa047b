"""pip install of the vla_ros library and the `vla-ros` command (machines without a ROS build).

On a ROS 2 install the package is built by colcon through CMakeLists.txt instead.
"""

from setuptools import find_packages, setup

setup(
    name="vla_ros",
    version="0.1.0",
    description="Dual-encoder VLA (OpenVLA family) on a robot arm through ROS 2, with a safety filter",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["vla_ros", "vla_ros.*"]),
    package_data={"vla_ros": ["assets/**/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/vla_ros"]),
        ("share/vla_ros", ["package.xml"]),
    ],
    install_requires=["numpy", "opencv-python-headless", "pillow", "pyyaml", "simplejpeg"],
    extras_require={
        "model": ["torch", "torchvision", "transformers", "timm", "safetensors", "tokenizers"],
        "export": ["onnx", "onnxruntime", "onnxscript"],
        "bag": ["rosbags", "mcap", "mcap-ros2-support", "matplotlib"],
    },
    entry_points={"console_scripts": ["vla-ros = vla_ros.cli:main"]},
)
