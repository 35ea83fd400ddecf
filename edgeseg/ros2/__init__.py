"""A ROS 2 node around the edgeseg runtime (``python -m edgeseg.ros2``; docs/ros2.md).

``node_core`` is the ROS-free part (message <-> numpy, the callback, the keep-latest drop policy), tested
without ROS. ``node`` wires it to rclpy, which comes from a ROS 2 install (``source /opt/ros/<distro>/
setup.bash``), never from pip: it is imported only when the node starts.
"""
