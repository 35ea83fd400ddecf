"""The fake tensorrt (tests/helpers/fake_tensorrt.py) checked against tensorrt-stubs (TensorRT 10.13's API):
every enum member the fake has exists in the stubs with the same value, every method the fake's classes have
exists on the real class with the same parameter names, and every attribute FakeBuilderConfig accepts is one
IBuilderConfig has. A fake that drifts from the real API would let the builder and session call what TensorRT
does not have; this is what stops that without a GPU.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import fake_tensorrt
from helpers.fake_tensorrt import FakeBuilderConfig, FakeContext, FakeEngine, FakeTimingCache, make_fake_trt
from test_typecheck import find_stub_dirs, fix_stub_text

ENUM_VALUE = re.compile(r"^\s+(\w+): typing\.ClassVar\[[\w.]+\]\s+# value = <[\w.]+\.(\w+): (-?\d+)>", re.M)
FAKE_ONLY_SLOTS = {"flags", "pools", "timing_cache"}  # set_flag/set_memory_pool_limit/set_timing_cache's record


@pytest.fixture(scope="module")
def stub_classes() -> dict[str, ast.ClassDef]:
    """Class name -> its stub definition; nested classes as Outer.Inner (ILogger.Severity)."""
    stubs = find_stub_dirs().get("tensorrt_bindings")
    if stubs is None:  # the dev setup installs them (pyproject: dev extra note); test_typecheck needs them too
        pytest.skip("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs==10.13.0.35.1)")
    tree = ast.parse(fix_stub_text((Path(stubs) / "tensorrt.pyi").read_text()))
    found: dict[str, ast.ClassDef] = {}

    def collect(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                found.setdefault(prefix + child.name, child)
                collect(child, prefix + child.name + ".")

    collect(tree, "")
    return found


def stub_members(cls: ast.ClassDef) -> dict[str, list[list[str]]]:
    """Member name -> the parameter names of each overload (empty list for an attribute or property)."""
    members: dict[str, list[list[str]]] = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef):
            names = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
            members.setdefault(node.name, []).append(names[1:] if names[:1] == ["self"] else names)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            members.setdefault(node.target.id, [])
    return members


def stub_enum_values(stub_text: str, cls: ast.ClassDef) -> dict[str, int]:
    text = ast.get_source_segment(stub_text, cls) or ""
    return {name: int(value) for name, _, value in ENUM_VALUE.findall(text)}


def fake_classes() -> dict[str, Any]:
    """Stub class name -> the fake class standing in for it."""
    fake = make_fake_trt("10.3.0.30")
    builder = fake.Builder(fake.ILogger())
    return {"IBuilderConfig": FakeBuilderConfig, "IExecutionContext": FakeContext, "ICudaEngine": FakeEngine,
            "ITimingCache": FakeTimingCache, "Builder": fake.Builder, "OnnxParser": fake.OnnxParser,
            "Runtime": fake.Runtime, "INetworkDefinition": type(builder.create_network(0))}


def test_every_fake_enum_member_has_the_stubs_name_and_value(stub_classes: dict[str, ast.ClassDef]) -> None:
    stubs = find_stub_dirs()["tensorrt_bindings"]
    text = fix_stub_text((Path(stubs) / "tensorrt.pyi").read_text())
    base = fake_tensorrt.TrtEnum
    enums = {name: value for name, value in vars(fake_tensorrt).items()
             if inspect.isclass(value) and issubclass(value, base) and value is not base}
    assert len(enums) >= 9
    for name, enum in enums.items():
        stub_name = "ILogger.Severity" if name == "Severity" else name
        real = stub_enum_values(text, stub_classes[stub_name])
        assert real, stub_name
        for member in enum:
            assert real.get(member.name) == member.value, f"{name}.{member.name}: fake {member.value}, " \
                                                          f"stubs {real.get(member.name)}"


def test_every_fake_method_exists_with_the_real_parameter_names(stub_classes: dict[str, ast.ClassDef]) -> None:
    checked = 0
    for stub_name, fake_cls in fake_classes().items():
        real = stub_members(stub_classes[stub_name])
        for name, member in vars(fake_cls).items():
            if name.startswith("_") or not callable(member) or inspect.isclass(member):
                continue
            assert name in real, f"{stub_name} has no {name} (the fake {fake_cls.__name__} does)"
            params = [p for p in inspect.signature(member).parameters][1:]  # without self
            assert params in real[name], f"{stub_name}.{name}{tuple(params)}: the stubs say {real[name]}"
            checked += 1
    assert checked >= 20


def test_fake_builder_config_takes_only_real_attributes(stub_classes: dict[str, ast.ClassDef]) -> None:
    real = stub_members(stub_classes["IBuilderConfig"])
    for slot in set(FakeBuilderConfig.__slots__) - FAKE_ONLY_SLOTS:
        assert slot in real, f"IBuilderConfig has no attribute {slot}"
    for attribute in ("num_io_tensors",):  # class attributes the fake engine reads as properties
        assert attribute in stub_members(stub_classes["ICudaEngine"])
