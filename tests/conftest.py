"""Shared fixtures; ``gpu``/``trt`` tests are skipped where CUDA/pycuda/TensorRT are absent.

The helpers the fixtures build from live in tests/helpers/ (on sys.path: pyproject's pytest ``pythonpath``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from types import ModuleType

import pytest
from helpers.fake_tensorrt import make_fake_trt


def _has_cuda_pycuda() -> bool:
    if importlib.util.find_spec("pycuda") is None:
        return False
    try:
        import pycuda.driver as drv

        drv.init()
        return drv.Device.count() > 0
    except Exception:
        return False


def _has_tensorrt() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import tensorrt

        return hasattr(tensorrt, "Builder")  # the stubs alone have no runtime module
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    checks = {"gpu": _has_cuda_pycuda, "trt": _has_tensorrt}
    cache: dict[str, bool] = {}
    for item in items:
        for marker, check in checks.items():
            if marker in item.keywords:
                if marker not in cache:
                    cache[marker] = check()
                if not cache[marker]:
                    item.add_marker(pytest.mark.skip(reason=f"needs {marker} (not available here)"))


@pytest.fixture
def write_build_manifest():
    """``write(folder, manifest, validated=ROLE|None, status="passed")``: a build folder's manifest.json as
    ``edgeseg build`` writes it (hashes of the named files, checksum), with the given verdict."""
    from edgeseg.fileio import sha256_file
    from edgeseg.manifest import ValidationVerdict, write_manifest

    def write(folder, manifest, validated=None, status="passed"):
        manifest.hashes = {role: sha256_file(folder / name) for role, name in manifest.artifacts.items()
                           if (folder / name).is_file()}
        manifest.validation = (ValidationVerdict(status="not_run", why="test folder") if validated is None else
                               ValidationVerdict(status=status, candidate=validated, failures=[] if status == "passed"
                                                 else ["argmax agreement 0.9 < 0.99"]))
        return write_manifest(folder, manifest)

    return write


@pytest.fixture
def fake_trt() -> Callable[..., ModuleType]:
    """``fake_trt(version="10.3.0.30", *, parse_ok=True, build_ok=True, dla_cores=2)``: a fresh fake ``tensorrt``
    module (tests/helpers/fake_tensorrt.py) to pass as ``trt=``; ``fake.record`` holds what was asked of it."""
    return make_fake_trt
