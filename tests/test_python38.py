"""Python 3.8 on the robot and the Jetson (#14 item 6): JetPack 5's TensorRT 8.5 bindings are for Python 3.8.

Every module but the torch layer runs on 3.8: the robot (runtime, validate, run, bench), the Jetson's
``build --onnx`` (pipeline, quant, engine, report) and all that ``edgeseg --help`` imports (every command).
The set is derived from the imports: the entry points below, closed over the edgeseg modules they import
(at module level or inside functions), stopping at modules that import torch at module level. A new module
on that side is checked without being listed here.

Checked everywhere: vermin (syntax, stdlib and builtin APIs newer than 3.8), and what vermin cannot see
(typing evaluated at run time, methods it cannot tie to a type). With a Python 3.8 interpreter
(EDGESEG_PYTHON38, python3.8 on PATH, or pyenv's 3.8.x): every file compiles under it, and where numpy,
click and pillow are installed for it, every module imports with torch and onnx blocked. The slow test
installs ``.[robot]`` into a 3.8 venv and runs validate, run and bench there.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.blocked_imports import run_without
from helpers.package_index import index_unreachable

ROOT = Path(__file__).resolve().parents[1]
ENTRY_PACKAGES = ("edgeseg.commands", "edgeseg.runtime", "edgeseg.pipeline", "edgeseg.ros2")  # every module in these
ENTRY_MODULES = ("edgeseg.__main__", "edgeseg.cli")
TORCH = {"torch", "torchvision"}  # imported at module level: the torch layer (desktop only)
DESKTOP_ONLY = ("torch", "torchvision", "onnx", "onnxsim")  # blocked when the modules are imported under 3.8


def module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _edgeseg_imports(module: str, path: Path, tree: ast.Module) -> Iterator[str]:
    """The edgeseg modules and packages ``tree`` imports, at module level or inside functions."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]  # `from . import cuda`: a module
        else:
            continue
        for name in names:
            parts = name.split(".")
            for end in range(1, len(parts) + 1):  # the packages on the way are imported too
                prefix = ".".join(parts[:end])
                if parts[0] == "edgeseg" and module_path(prefix) is not None:
                    yield prefix


def _imports_torch(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] in TORCH for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in TORCH:
            return True
    return False


@functools.cache
def python38_modules() -> dict[str, Path]:
    """Module name -> file of every module that must run on Python 3.8."""
    todo = list(ENTRY_MODULES)
    for package in ENTRY_PACKAGES:
        init = module_path(package)
        assert init is not None, package
        todo += [package, *(f"{package}.{p.stem}" for p in sorted(init.parent.glob("*.py")) if p.stem != "__init__")]
    found: dict[str, Path] = {}
    torch_layer: set[str] = set()
    while todo:
        name = todo.pop()
        if name in found or name in torch_layer:
            continue
        path = module_path(name)
        assert path is not None, name
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        if _imports_torch(tree):
            torch_layer.add(name)
            continue
        found[name] = path
        todo.extend(_edgeseg_imports(name, path, tree))
    return dict(sorted(found.items()))


def test_the_python38_side_is_everything_but_the_torch_layer() -> None:
    modules = python38_modules()
    for name in ("edgeseg.runtime.trt", "edgeseg.runtime.compat", "edgeseg.runtime.segmenter", "edgeseg.cli",
                 "edgeseg.commands.run", "edgeseg.commands.validate", "edgeseg.commands.bench",
                 "edgeseg.pipeline.validate", "edgeseg.pipeline.bench", "edgeseg.pipeline.artifacts",
                 "edgeseg.trt_version", "edgeseg.onnx_model", "edgeseg.engine.trt_builder", "edgeseg.quant.calib_data",
                 "edgeseg.report.plots", "edgeseg.data.folder", "edgeseg.models"):
        assert name in modules, name
    for name in ("edgeseg.models.checkpoint", "edgeseg.models.registry", "edgeseg.training.trainer",
                 "edgeseg.export.onnx_export", "edgeseg.data.torch_dataset"):
        assert name not in modules, name


# -- vermin -----------------------------------------------------------------------------------------------
def test_vermin_finds_nothing_newer_than_python38() -> None:
    if importlib.util.find_spec("vermin") is None:
        pytest.skip("vermin is not installed (pip install 'edgeseg[dev]')")
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from vermin import main; sys.exit(main())", "--no-config-file",
         "--target=3.8-", "--no-tips", "--violations", "--processes=1", *map(str, python38_modules().values())],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


# -- what vermin cannot see --------------------------------------------------------------------------------
# vermin does not know which objects are types: `Batch = dict[str, np.ndarray]` (PEP 585) or `Dim = int | str`
# (PEP 604) outside annotations pass it, but Python 3.8 evaluates them at import and raises TypeError. Nor can
# it tie a method called on a variable to str or Path (`name.removesuffix(...)`).
BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}
GENERIC_MODULES = {"collections", "collections.abc", "contextlib", "os", "queue", "re", "subprocess", "weakref"}
TYPE_NAMES = BUILTIN_GENERICS | {"int", "float", "complex", "str", "bytes", "bool", "object"}
NEWER_METHODS = {"removeprefix": "3.9", "removesuffix": "3.9", "is_relative_to": "3.9", "with_stem": "3.9",
                 "bit_count": "3.10"}


def _annotations(node: ast.AST) -> Iterator[ast.expr]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = node.args
        for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if arg is not None and arg.annotation is not None:
                yield arg.annotation
        if node.returns is not None:
            yield node.returns
    elif isinstance(node, ast.AnnAssign):
        yield node.annotation


def runtime_typing_problems(source: str, filename: str = "<source>") -> list[str]:
    """'file:line: why' for each run-time use of typing syntax or a method newer than Python 3.8. Annotations
    count only without ``from __future__ import annotations``; ``if TYPE_CHECKING:`` blocks never."""
    tree = ast.parse(source, filename)
    postponed = any(isinstance(node, ast.ImportFrom) and node.module == "__future__"
                    and any(alias.name == "annotations" for alias in node.names) for node in tree.body)
    generic_names = set(BUILTIN_GENERICS)
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module in GENERIC_MODULES:
            generic_names |= {alias.asname or alias.name for alias in node.names}
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
        if postponed:
            skipped |= {id(inner) for annotation in _annotations(node) for inner in ast.walk(annotation)}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):  # a local's annotation is never evaluated
            skipped |= {id(inner) for statement in node.body for local in ast.walk(statement)
                        if isinstance(local, ast.AnnAssign) for inner in ast.walk(local.annotation)}

    def generic(node: ast.expr) -> bool:
        if not isinstance(node, ast.Subscript):
            return False
        value = node.value
        return (isinstance(value, ast.Name) and value.id in generic_names) or \
            (isinstance(value, ast.Attribute) and ast.unparse(value.value) in GENERIC_MODULES)

    def type_like(node: ast.expr) -> bool:
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        if name is not None:  # int, Path, np.ndarray's class names; not FLAG_CONSTANTS
            return name in TYPE_NAMES or (name[:1].isupper() and not name.isupper())
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return type_like(node.left) or type_like(node.right)
        return (isinstance(node, ast.Constant) and node.value is None) or generic(node)

    problems: dict[int, str] = {}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        line = getattr(node, "lineno", 0)
        if generic(node):
            problems.setdefault(line, f"{ast.unparse(node)} is evaluated at run time: subscripting it needs "
                                      "Python 3.9 (use typing's Dict/Callable/..., or a string)")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and type_like(node):
            problems.setdefault(line, f"{ast.unparse(node)} is evaluated at run time: X | Y needs Python 3.10 "
                                      "(use typing.Union/Optional)")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in NEWER_METHODS:
            problems.setdefault(line, f".{node.func.attr}() needs Python {NEWER_METHODS[node.func.attr]}")
    return [f"{filename}:{line}: {why}" for line, why in sorted(problems.items())]


SAMPLE = '''\
from __future__ import annotations
from collections.abc import Callable
from typing import TYPE_CHECKING, Dict, Optional, Union
import fcntl
import numpy as np
if TYPE_CHECKING:
    Hidden = dict[str, int] | None
Batch = dict[str, np.ndarray]  # flagged
Log = Callable[[str], None]  # flagged
Dim = int | str  # flagged
Fine = Dict[str, Union[int, None]]
FLAGS = fcntl.LOCK_EX | fcntl.LOCK_NB
def f(x: list[int] | None, name: str, mask: int) -> dict[str, int] | None:
    y: Optional[tuple[int, ...]] = None
    if isinstance(x, Path | None):  # flagged
        return {name.removesuffix(".py"): mask | 1}  # flagged
    return None
'''


def test_the_runtime_typing_check_sees_what_python38_evaluates() -> None:
    lines = SAMPLE.splitlines()
    flagged = [lines[int(problem.split(":")[1]) - 1] for problem in runtime_typing_problems(SAMPLE)]
    assert flagged == [line for line in lines if line.endswith("# flagged")]
    # without the __future__ import, a signature's annotations are evaluated at definition time (a local's never)
    bare = runtime_typing_problems(SAMPLE.replace("from __future__ import annotations", "pass"))
    assert [problem.split(":")[1] for problem in bare if problem not in runtime_typing_problems(SAMPLE)] == ["13"]


def test_no_typing_or_method_newer_than_python38_at_run_time() -> None:
    problems = [problem for path in python38_modules().values()
                for problem in runtime_typing_problems(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert not problems, "\n".join(problems)


# -- a real Python 3.8 ----------------------------------------------------------------------------------
@functools.cache
def find_python38() -> str | None:
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates = [os.environ.get("EDGESEG_PYTHON38"), shutil.which("python3.8"),
                  *map(str, sorted(pyenv.glob("versions/3.8*/bin/python")))]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 8))"],
                                   capture_output=True, text=True, timeout=60)
            if probe.stdout.strip() == "True":
                return candidate
    return None


def python38() -> str:
    found = find_python38()
    if found is None:
        pytest.skip("no Python 3.8 interpreter here (EDGESEG_PYTHON38, python3.8 or pyenv's): vermin and the "
                    "run-time typing check above still ran")
    return found


COMPILE = """\
import sys
bad = []
for path in sys.argv[1:]:
    try:
        with open(path, encoding="utf-8") as source:
            compile(source.read(), path, "exec")  # nothing written: no __pycache__ in the checkout
    except SyntaxError as exc:
        bad.append("%s:%s: %s" % (path, exc.lineno, exc.msg))
print("\\n".join(bad) or "ok")
"""

IMPORT = """
import importlib
import sys
import traceback
sys.dont_write_bytecode = True  # no cpython-38 caches in the checkout
bad = []
for name in {names!r}:
    try:
        importlib.import_module(name)
    except Exception as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        bad.append("%s: %s: %s (%s:%s)" % (name, type(exc).__name__, exc, frame.filename, frame.lineno))
print("\\n".join(bad) or "ok")
"""


def importable_names() -> list[str]:
    return [name for name in python38_modules() if name != "edgeseg.__main__"]  # __main__ runs the CLI


def test_every_module_compiles_under_python38() -> None:
    result = subprocess.run([python38(), "-c", COMPILE, *map(str, python38_modules().values())],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr


def test_every_module_imports_under_python38_without_torch_and_onnx() -> None:
    interpreter = python38()
    if subprocess.run([interpreter, "-c", "import numpy, click, PIL"], capture_output=True).returncode != 0:
        pytest.skip(f"{interpreter} has no numpy, click and pillow (the slow test installs them into a venv)")
    result = run_without(IMPORT.format(names=importable_names()), DESKTOP_ONLY, python=interpreter, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr


# -- slow: the robot install on Python 3.8, end to end -------------------------------------------------------

def tiny_build_folder(out: Path) -> Path:
    """A validated FP32 build folder from a one-conv ONNX (no torch: the reference is ONNX Runtime's output,
    standing in for PyTorch's), built with this process's install."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import numpy as np
    from click.testing import CliRunner
    from helpers.tiny_onnx import MODEL_NAME, SPEC, conv_model, with_metadata, write_images

    from edgeseg.cli import main
    from edgeseg.reference import Reference, preprocess_frames, save_reference, synthetic_frames

    out.mkdir(parents=True)
    model = with_metadata(conv_model(kernel=3), spec=SPEC, num_classes=4)
    model.ir_version = 8  # what torch.onnx.export writes; ONNX Runtime 1.19 (the last for Python 3.8) reads <= 10
    onnx.save(model, str(out / "model.onnx"))
    frames = synthetic_frames(8, SPEC.height, SPEC.width, seed=1)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = np.concatenate([session.run(None, {"images": x[None]})[0] for x in preprocess_frames(frames, SPEC)])
    meta = {"model": MODEL_NAME, "num_classes": 4, "input_spec": SPEC.to_dict()}
    save_reference(out / "reference.npz", Reference.from_logits(frames, logits, meta))
    built = CliRunner().invoke(main, ["build", "--onnx", str(out / "model.onnx"), "--precision", "fp32"])
    assert built.exit_code == 0 and "build passed" in built.output, built.output
    write_images(out.parent / "frames", 2)
    return out


@pytest.mark.slow
def test_robot_install_on_python38_runs_validate_run_and_bench(tmp_path: Path) -> None:
    interpreter = python38()
    unreachable = index_unreachable()  # probed first: an install that fails while the index answers fails
    if unreachable:
        pytest.skip("the package index is unreachable: " + unreachable)
    folder = tiny_build_folder(tmp_path / "tiny")
    venv = tmp_path / "venv38"
    made = subprocess.run([interpreter, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    # a current pip first: the one 3.8's venv brings may pick a release whose Requires-Python excludes 3.8
    for args in (["--upgrade", "pip"], [f"{ROOT}[robot]"]):
        installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *args],
                                   capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
        assert installed.returncode == 0, installed.stderr[-3000:]

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, env=env,
                              cwd=tmp_path, stdin=subprocess.DEVNULL)

    # the installed copy (cwd is not the checkout), with no torch and no onnx in the venv
    imported = run(venv / "bin" / "python", "-c", IMPORT.format(names=importable_names()))
    assert imported.stdout.strip() == "ok", imported.stdout + imported.stderr
    assert run(venv / "bin" / "python", "-c", "import torch").returncode != 0
    edgeseg = venv / "bin" / "edgeseg"
    assert run(edgeseg, "--help").returncode == 0
    checked = run(edgeseg, "validate", "--candidate", folder / "model.onnx", "--reference", folder / "reference.npz",
                  "--out", tmp_path / "v")
    assert checked.returncode == 0 and "validation passed" in checked.stdout, checked.stdout + checked.stderr
    ran = run(edgeseg, "run", "--artifacts", folder, "--source", tmp_path / "frames", "--save", tmp_path / "ov")
    assert ran.returncode == 0 and len(list((tmp_path / "ov").glob("*.png"))) == 2, ran.stdout + ran.stderr
    timed = run(edgeseg, "bench", "--artifacts", folder, "--iterations", "3", "--warmup", "1", "--out", tmp_path / "b")
    assert timed.returncode == 0 and "ort-fp32" in timed.stdout, timed.stdout + timed.stderr
    refused = run(edgeseg, "models")
    assert refused.returncode == 1 and "edgeseg[desktop]" in refused.stderr, refused.stdout + refused.stderr
