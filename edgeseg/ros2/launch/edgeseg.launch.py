"""ros2 launch <this file> artifacts:=engines/NAME [input_topic:=/camera/image_raw backend:=auto ...]

Runs ``python -m edgeseg.ros2`` with the interpreter that runs the launch (edgeseg is a pip package, not
an ament package, so there is no ``ros2 run edgeseg ...`` executable). Unverified on a real ROS 2 system.
"""

import sys

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration

ARGUMENTS = {
    "artifacts": ("", "build folder (engines/NAME), required"),
    "backend": ("auto", "auto | tensorrt | onnxruntime"),
    "input_topic": ("/camera/image_raw", "image topic (ending in /compressed: CompressedImage)"),
    "mask_topic": ("", "mono8 mask topic (empty: input topic + /edgeseg/mask)"),
    "overlay_topic": ("", "rgb8 overlay topic (empty: input topic + /edgeseg/overlay)"),
    "publish_overlay": ("true", "also publish the colour overlay"),
    "frame_order": ("auto", "auto | RGB | BGR (force the colour order of mislabelled drivers)"),
    "overlay_alpha": ("0.5", "overlay opacity in [0, 1]"),
}
FLOATS = ("overlay_alpha",)  # a ROS parameter keeps its declared type: 1 must reach the node as 1.0


def _node(context):
    args = []
    for name in ARGUMENTS:
        value = LaunchConfiguration(name).perform(context)
        if value == "":  # empty: the node's default (an empty -p value would not parse as a string)
            continue
        args += ["-p", f"{name}:={float(value)!r}" if name in FLOATS else f"{name}:={value}"]
    return [ExecuteProcess(cmd=[sys.executable, "-m", "edgeseg.ros2", "--ros-args", *args], output="screen")]


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_node)])
