"""``python -m edgeseg.ros2 [--ros-args ...]``: run the segmentation node (needs a sourced ROS 2)."""

from __future__ import annotations

import sys

from ..errors import EdgesegError
from .node import main


def run() -> None:
    try:
        main(sys.argv)
    except EdgesegError as exc:  # a user error (no rclpy, bad artifacts folder): its message, no traceback
        print(f"error: {exc.format()}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    run()
