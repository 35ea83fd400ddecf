"""A fake ``rclpy`` (with ``rclpy.node``, ``rclpy.qos``) and ``sensor_msgs.msg``: what ``edgeseg.ros2.node`` calls,
so its wiring runs without a ROS 2 install. ``install_fake_rclpy(monkeypatch)`` puts them in ``sys.modules``.

Faithful to rclpy's API where the node touches it (rclpy/node.py, rclpy/qos.py of Humble to Jazzy):

- ``rclpy.init(args=...)`` reads ``--ros-args -p name:=value`` overrides (values parsed as YAML scalars: int,
  float, true/false, else string); a Node made before ``init`` or after ``shutdown`` raises, as rclpy does.
- ``Node.declare_parameter(name, value=None, descriptor=None, ignore_override=False)`` returns a Parameter whose
  ``value`` is the override if one was given; parameters are statically typed (since Galactic): an override
  of another type than the default raises ``InvalidParameterTypeException`` (an int for a float default too);
  declaring a name twice raises ``ParameterAlreadyDeclaredException``.
- ``create_publisher(msg_type, topic, qos_profile, *, ...)`` and ``create_subscription(msg_type, topic,
  callback, qos_profile, *, ...)``: ``qos_profile`` is a QoSProfile or an int depth, anything else a TypeError;
  ``publish`` refuses a message of another type (TypeError, as rclpy's check).
- ``QoSProfile`` needs a history or a depth (ValueError otherwise); ``qos_profile_sensor_data`` is best effort,
  keep last 5, volatile.
- ``sensor_msgs.msg.Image``/``CompressedImage`` check field types on assignment (generated messages assert).

Test hooks, not rclpy's: ``fake.nodes`` (every Node made), ``fake.published`` (a list of (topic, msg)),
``fake.wait_for(predicate)`` (waits, on a condition notified by every publish and log line, until the predicate
holds; False after a minute, a hang guard), ``fake.incoming`` (topic -> messages that ``spin`` hands to that
topic's subscription callbacks before it waits for ``fake.spin_until``, then raises KeyboardInterrupt as a
Ctrl-C would).
"""

from __future__ import annotations

import array
import enum
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

import pytest


class HistoryPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    KEEP_LAST = 1
    KEEP_ALL = 2


class ReliabilityPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    RELIABLE = 1
    BEST_EFFORT = 2


class DurabilityPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    TRANSIENT_LOCAL = 1
    VOLATILE = 2


class QoSProfile:
    def __init__(self, *, history: HistoryPolicy | None = None, depth: int | None = None,
                 reliability: ReliabilityPolicy = ReliabilityPolicy.RELIABLE,
                 durability: DurabilityPolicy = DurabilityPolicy.VOLATILE) -> None:
        if history is None and depth is None:
            raise ValueError("A QoSProfile must specify at least one of history or depth")
        self.history = history if history is not None else HistoryPolicy.KEEP_LAST
        self.depth = depth if depth is not None else 0
        self.reliability, self.durability = reliability, durability


qos_profile_sensor_data = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                                     reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)


class InvalidParameterTypeException(Exception):
    pass


class ParameterAlreadyDeclaredException(Exception):
    pass


class Parameter:
    def __init__(self, name: str, value: Any) -> None:
        self.name, self.value = name, value


def parse_override(text: str) -> Any:
    """``-p name:=value``: rcl reads the value as a YAML scalar."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _typed(value: Any) -> type:
    return bool if isinstance(value, bool) else type(value)


def _qos(qos_profile: Any) -> QoSProfile:
    if isinstance(qos_profile, bool) or not isinstance(qos_profile, (QoSProfile, int)):
        raise TypeError(f"Expected QoSProfile or int, but received {type(qos_profile)!r}")
    return qos_profile if isinstance(qos_profile, QoSProfile) else QoSProfile(depth=qos_profile)


class Header:
    def __init__(self, sec: int = 0, nanosec: int = 0, frame_id: str = "") -> None:
        self.stamp = types.SimpleNamespace(sec=sec, nanosec=nanosec)
        self.frame_id = frame_id


class _Message:
    """A generated ROS message: fields are slots and assignments are type-checked."""

    __slots__: tuple[str, ...] = ()
    _types: dict[str, tuple[type, ...]] = {}
    _defaults: dict[str, Callable[[], Any]] = {}

    def __init__(self, **fields: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, fields.pop(name) if name in fields else self._defaults[name]())
        assert not fields, f"{type(self).__name__} has no field(s) {sorted(fields)}"

    def __setattr__(self, name: str, value: Any) -> None:
        assert isinstance(value, self._types[name]), f"{type(self).__name__}.{name} cannot be {type(value)!r}"
        object.__setattr__(self, name, value)


class Image(_Message):
    __slots__ = ("header", "height", "width", "encoding", "is_bigendian", "step", "data")
    _types = {"header": (Header,), "height": (int,), "width": (int,), "encoding": (str,), "is_bigendian": (int,),
              "step": (int,), "data": (array.array, bytes, list)}
    _defaults = {"header": Header, "height": int, "width": int, "encoding": str, "is_bigendian": int, "step": int,
                 "data": lambda: array.array("B")}


class CompressedImage(_Message):
    __slots__ = ("header", "format", "data")
    _types = {"header": (Header,), "format": (str,), "data": (array.array, bytes, list)}
    _defaults = {"header": Header, "format": str, "data": lambda: array.array("B")}


class Logger:
    """rclpy's RcutilsLogger: ``lines`` keeps (level, message); ``changed`` is notified of each."""

    def __init__(self, changed: threading.Condition) -> None:
        self.lines: list[tuple[str, str]] = []
        self.changed = changed

    def _log(self, level: str, message: str) -> None:
        with self.changed:
            self.lines.append((level, message))
            self.changed.notify_all()

    def info(self, message: str) -> None:
        self._log("info", message)

    def warning(self, message: str) -> None:
        self._log("warning", message)

    def error(self, message: str) -> None:
        self._log("error", message)


def make_fake_rclpy() -> types.ModuleType:
    """A fresh fake ``rclpy`` module (``.node``, ``.qos`` and ``.sensor_msgs`` as attributes)."""
    fake = types.ModuleType("rclpy", "a fake rclpy (tests/helpers/fake_rclpy.py)")
    state: dict[str, Any] = {"initialised": False, "overrides": {}}
    published: list[tuple[str, Any]] = []
    changed = threading.Condition()

    def init(*, args: list[str] | None = None, context: Any = None, domain_id: int | None = None) -> None:
        if state["initialised"]:
            raise RuntimeError("Context.init() must only be called once")
        overrides, words = {}, list(args or [])
        ros_args = words[words.index("--ros-args") + 1:] if "--ros-args" in words else []
        for flag, value in zip(ros_args, ros_args[1:], strict=False):  # (-p, name:=value) pairs
            if flag == "-p":
                name, _, text = value.partition(":=")
                overrides[name] = parse_override(text)
        state.update(initialised=True, overrides=overrides)

    def ok(*, context: Any = None) -> bool:
        return bool(state["initialised"])

    def shutdown(*, context: Any = None) -> None:
        if not state["initialised"]:
            raise RuntimeError("failed to shutdown: rcl_shutdown already called on the given context")
        state["initialised"] = False

    class Publisher:
        def __init__(self, msg_type: type, topic: str, qos_profile: QoSProfile) -> None:
            self.msg_type, self.topic, self.qos_profile = msg_type, topic, qos_profile

        def publish(self, msg: Any) -> None:
            if not isinstance(msg, self.msg_type):
                raise TypeError(f"Expected {self.msg_type}, got {type(msg)}")
            with changed:
                published.append((self.topic, msg))
                changed.notify_all()

    class Subscription:
        def __init__(self, msg_type: type, topic: str, callback: Callable[[Any], None],
                     qos_profile: QoSProfile) -> None:
            self.msg_type, self.topic, self.callback, self.qos_profile = msg_type, topic, callback, qos_profile

    class Node:
        def __init__(self, node_name: str, *, context: Any = None, cli_args: list[str] | None = None,
                     namespace: str | None = None, parameter_overrides: list[Parameter] | None = None,
                     **options: Any) -> None:
            if not state["initialised"]:
                raise RuntimeError("rclpy.init() has not been called")  # rclpy: the context is not valid
            self.name = node_name
            self.parameters: dict[str, Parameter] = {}
            self.overrides = dict(state["overrides"])
            self.overrides.update({p.name: p.value for p in parameter_overrides or []})
            self.publishers: list[Publisher] = []
            self.subscriptions: list[Subscription] = []
            self.timers: list[tuple[float, Callable[[], None]]] = []
            self.logger = Logger(changed)
            self.destroyed = False
            fake.nodes.append(self)

        def get_name(self) -> str:
            return self.name

        def get_logger(self) -> Logger:
            return self.logger

        def declare_parameter(self, name: str, value: Any = None, descriptor: Any = None,
                              ignore_override: bool = False) -> Parameter:
            if name in self.parameters:
                raise ParameterAlreadyDeclaredException(name)
            if name in self.overrides and not ignore_override:
                override = self.overrides[name]
                if value is not None and _typed(override) is not _typed(value):
                    raise InvalidParameterTypeException(
                        f"Trying to set parameter '{name}' to '{override}' of type "
                        f"'{_typed(override).__name__}', expecting type '{_typed(value).__name__}'")
                value = override
            self.parameters[name] = Parameter(name, value)
            return self.parameters[name]

        def get_parameter(self, name: str) -> Parameter:
            return self.parameters[name]

        def create_publisher(self, msg_type: type, topic: str, qos_profile: Any, *, callback_group: Any = None,
                             event_callbacks: Any = None, qos_overriding_options: Any = None,
                             publisher_class: Any = None) -> Publisher:
            self.publishers.append(Publisher(msg_type, topic, _qos(qos_profile)))
            return self.publishers[-1]

        def create_subscription(self, msg_type: type, topic: str, callback: Callable[[Any], None], qos_profile: Any,
                                *, callback_group: Any = None, event_callbacks: Any = None,
                                qos_overriding_options: Any = None, raw: bool = False) -> Subscription:
            self.subscriptions.append(Subscription(msg_type, topic, callback, _qos(qos_profile)))
            return self.subscriptions[-1]

        def create_timer(self, timer_period_sec: float, callback: Callable[[], None], callback_group: Any = None,
                         clock: Any = None) -> tuple[float, Callable[[], None]]:
            self.timers.append((float(timer_period_sec), callback))
            return self.timers[-1]

        def destroy_node(self) -> None:
            self.destroyed = True

    def wait_for(predicate: Callable[[], bool]) -> bool:
        with changed:
            return changed.wait_for(predicate, timeout=60)

    def spin(node: Node, executor: Any = None) -> None:
        """Hand ``fake.incoming`` to the subscriptions, wait until ``fake.spin_until()``, then 'Ctrl-C'."""
        for subscription in node.subscriptions:
            for msg in fake.incoming.get(subscription.topic, []):
                assert isinstance(msg, subscription.msg_type), (subscription.topic, type(msg))
                subscription.callback(msg)
        assert wait_for(fake.spin_until), "spin waited a minute for fake.spin_until"
        raise KeyboardInterrupt

    node_module = types.ModuleType("rclpy.node")
    node_module.Node = Node  # type: ignore[attr-defined]
    qos_module = types.ModuleType("rclpy.qos")
    for name, value in {"QoSProfile": QoSProfile, "qos_profile_sensor_data": qos_profile_sensor_data,
                        "HistoryPolicy": HistoryPolicy, "ReliabilityPolicy": ReliabilityPolicy,
                        "DurabilityPolicy": DurabilityPolicy}.items():
        setattr(qos_module, name, value)
    msg_module = types.ModuleType("sensor_msgs.msg")
    msg_module.Image, msg_module.CompressedImage = Image, CompressedImage  # type: ignore[attr-defined]
    members = {"init": init, "ok": ok, "shutdown": shutdown, "spin": spin, "node": node_module, "qos": qos_module,
               "sensor_msgs": msg_module, "nodes": [], "published": published, "incoming": {},
               "spin_until": lambda: True, "wait_for": wait_for, "Parameter": Parameter}
    for name, value in members.items():
        setattr(fake, name, value)
    return fake


def install_fake_rclpy(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Make ``import rclpy``, ``rclpy.node``, ``rclpy.qos`` and ``sensor_msgs.msg`` import the fakes."""
    fake = make_fake_rclpy()
    sensor_msgs = types.ModuleType("sensor_msgs")
    sensor_msgs.msg = fake.sensor_msgs  # type: ignore[attr-defined]
    for name, module in {"rclpy": fake, "rclpy.node": fake.node, "rclpy.qos": fake.qos, "sensor_msgs": sensor_msgs,
                         "sensor_msgs.msg": fake.sensor_msgs}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return fake
