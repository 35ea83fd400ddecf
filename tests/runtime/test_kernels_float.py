"""kernels.cu without a GPU: no FP64 in the device code, and its resize arithmetic emulated in numpy float32.

FP64 runs at 1/32-1/64 of the FP32 rate on Jetson, so the preprocessing kernel must stay in 32-bit maths.
The emulation mirrors ``bilinear_coords`` and ``preprocess`` statement by statement (each C statement it
mirrors is checked to be in kernels.cu) and is compared with ``spec.resize_bilinear`` / ``spec.preprocess``.
The kernel itself runs only in tests/runtime/test_gpu_runtime.py (marked gpu).
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edgeseg.errors import InputError
from edgeseg.runtime import kernels
from edgeseg.runtime.kernels import KERNEL_SOURCE, GpuKernels
from edgeseg.spec import InputSpec, normalisation, preprocess, resize_bilinear

# double-only maths functions: their float forms end in f (floorf, fminf...); min/max on ints are fine
DOUBLE_FUNCTIONS = ("floor", "ceil", "trunc", "round", "rint", "fmin", "fmax", "fabs", "sqrt", "exp", "log",
                    "pow", "fma", "modf", "fmod")
NUMBER = re.compile(r"(?<![\w.])(0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)([A-Za-z]*)")


def code_only(source: str) -> str:
    """The source without comments (they may mention doubles) or string literals."""
    source = re.sub(r"/\*.*?\*/", " ", source, flags=re.S)
    source = re.sub(r"//[^\n]*", " ", source)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', source)


def fp64_uses(source: str) -> list[str]:
    """Everything in the code that computes in double: the type, unsuffixed float literals, double maths."""
    code = code_only(source)
    found = [f"type: {m.group(0)}" for m in re.finditer(r"\bdouble\b", code)]
    for match in NUMBER.finditer(code):
        number, suffix = match.groups()
        is_float = not number.lower().startswith("0x") and bool(re.search(r"[.eE]", number))
        if is_float and suffix.lower() != "f":
            found.append(f"literal: {match.group(0)}")
    found += [f"call: {m.group(1)}" for m in re.finditer(rf"\b({'|'.join(DOUBLE_FUNCTIONS)})\s*\(", code)]
    return found


OLD_COORDS = """
    double pos = ((double)dst + 0.5) * ((double)src_size / (double)dst_size) - 0.5;
    pos = fmin(fmax(pos, 0.0), (double)(src_size - 1));
    int l = (int)floor(pos);  // a comment with 0.5 and double is ignored
    *w = (float)(pos - (double)l);
"""


def test_the_static_check_finds_the_fp64_of_the_former_kernel() -> None:
    found = fp64_uses(OLD_COORDS)
    assert "type: double" in found and "literal: 0.5" in found and "literal: 0.0" in found
    assert "call: floor" in found and "call: fmin" in found and "call: fmax" in found
    assert fp64_uses("float a = 1.0f + 2.5e-3F; int b = 0x1F + x0 * 3; float c = floorf(a); int d = 2LL;") == []


def test_kernel_source_has_no_fp64() -> None:
    assert fp64_uses(KERNEL_SOURCE.read_text()) == []


# ---- numpy float32 emulation of kernels.cu: each line pairs with the C statement it mirrors ----

MIRRORED = (
    "int num = (2 * dst + 1) * src_size - dst_size;",
    "int den = 2 * dst_size;",
    "int l = 0;",
    "float weight = 0.0f;",
    "if (num > 0) {",
    "l = num / den;",
    "if (l >= src_size - 1) {",
    "l = src_size - 1;",
    "weight = __fdiv_rn((float)(num - l * den), (float)den);",
    "*hi = min(l + 1, src_size - 1);",
    "float top = __fadd_rn(__fmul_rn((float)r0[x0 * 3 + sc], 1.0f - wx), __fmul_rn((float)r0[x1 * 3 + sc], wx));",
    "float bottom = __fadd_rn(__fmul_rn((float)r1[x0 * 3 + sc], 1.0f - wx), __fmul_rn((float)r1[x1 * 3 + sc], wx));",
    "float v = __fadd_rn(__fmul_rn(top, 1.0f - wy), __fmul_rn(bottom, wy));",
    "dst[c * plane + (size_t)y * dst_w + x] = to_out<T>(__fmul_rn(v - mean[c], inv_std[c]));",
)


def test_the_emulation_mirrors_the_kernel_source() -> None:
    code = " ".join(code_only(KERNEL_SOURCE.read_text()).split())
    missing = [line for line in MIRRORED if line not in code]
    assert missing == [], "kernels.cu changed: update the emulation below and MIRRORED"


def bilinear_coords(dst_size: int, src_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """kernels.cu bilinear_coords for every dst at once: int32 and float32 only, as on the device."""
    dst = np.arange(dst_size, dtype=np.int32)
    src, dsz = np.int32(src_size), np.int32(dst_size)
    num = (2 * dst + 1) * src - dsz  # int num = (2 * dst + 1) * src_size - dst_size;
    den = np.int32(2) * dsz  # int den = 2 * dst_size;
    lo = np.zeros(dst_size, np.int32)  # int l = 0;
    weight = np.zeros(dst_size, np.float32)  # float weight = 0.0f;
    inside = num > 0  # if (num > 0) {
    lo[inside] = num[inside] // den  # l = num / den;  (num > 0: C truncation == floor)
    clamped = lo >= src - 1  # if (l >= src_size - 1) {
    lo[clamped] = src - 1  # l = src_size - 1;
    mid = inside & ~clamped  # } else {
    # weight = __fdiv_rn((float)(num - l * den), (float)den);  numpy's float32 division is IEEE round-to-nearest
    weight[mid] = (num[mid] - lo[mid] * den).astype(np.float32) / np.float32(den)
    hi = np.minimum(lo + 1, src - 1)  # *hi = min(l + 1, src_size - 1);
    assert num.dtype == lo.dtype == np.int32 and weight.dtype == np.float32  # no promotion anywhere
    return lo, hi, weight


def emulate_resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """The kernel's interpolation (__fmul_rn/__fadd_rn: float32, no fused multiply-add), HxWx3 float32."""
    x0, x1, wx = bilinear_coords(width, frame.shape[1])
    y0, y1, wy = bilinear_coords(height, frame.shape[0])
    r0, r1 = frame[y0].astype(np.float32), frame[y1].astype(np.float32)  # rows y0, y1
    one = np.float32(1.0)
    wx3, wy3 = wx[None, :, None], wy[:, None, None]
    top = r0[:, x0] * (one - wx3) + r0[:, x1] * wx3
    bottom = r1[:, x0] * (one - wx3) + r1[:, x1] * wx3
    out = top * (one - wy3) + bottom * wy3
    assert out.dtype == np.float32
    return out


def emulate_preprocess(frame: np.ndarray, spec: InputSpec, frame_order: str) -> np.ndarray:
    mean, inv_std = normalisation(spec)  # GpuKernels passes these as the kernel's m0..m2, s0..s2
    resized = emulate_resize(frame, spec.height, spec.width)
    if frame_order != spec.channel_order:  # int sc = swap ? 2 - c : c;
        resized = resized[:, :, ::-1]
    return ((resized - mean) * inv_std).transpose(2, 0, 1)[None]


SIZES = [((720, 1280), (512, 1024)), ((480, 640), (192, 384)), ((1080, 1920), (384, 640)),
         ((100, 150), (256, 320)), ((37, 53), (96, 64)), ((64, 64), (64, 64)), ((1, 1), (32, 32)),
         ((2, 3), (64, 96))]


@pytest.mark.parametrize(("src", "dst"), SIZES)
def test_float32_coordinates_match_the_reference_resize(src: tuple[int, int], dst: tuple[int, int]) -> None:
    frame = np.random.default_rng(sum(src + dst)).integers(0, 256, (*src, 3), dtype=np.uint8)
    expected = resize_bilinear(frame, *dst)
    got = emulate_resize(frame, *dst)
    assert np.abs(got - expected).max() <= 1e-3  # in 0..255 units


def test_float32_coordinates_agree_with_the_float64_reference_weights() -> None:
    for src, dst in [(720, 512), (1280, 1024), (640, 384), (1920, 640), (150, 320), (7, 3), (1, 32)]:
        lo, hi, weight = bilinear_coords(dst, src)
        pos = np.clip((np.arange(dst) + 0.5) * (src / dst) - 0.5, 0.0, src - 1)  # spec.resize_bilinear
        sample = lo.astype(np.float64) + weight.astype(np.float64)  # the position the kernel samples
        # off only by the float32 rounding of a weight in [0, 1): a float32 position would be off by ~1e-4
        assert np.abs(sample - pos).max() <= 2.0**-24
        assert ((0 <= lo) & (lo <= hi) & (hi < src) & (hi - lo <= 1)).all()


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_emulated_kernel_matches_spec_preprocess(order: str) -> None:
    spec = InputSpec(192, 384)
    frame = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert np.abs(emulate_preprocess(frame, spec, order) - preprocess(frame, spec, order)).max() <= 1e-4


# ---- the launcher: its arguments against the kernel's parameter list ----

C_TYPES = {"const unsigned char *": np.uintp, "float *": np.uintp, "__half *": np.uintp, "int": np.int32,
           "float": np.float32}


def kernel_parameters(name: str) -> list[type]:
    match = re.search(rf"__global__ void {name}\(([^)]*)\)", KERNEL_SOURCE.read_text())
    assert match is not None
    params = [" ".join(p.split()) for p in match.group(1).split(",")]
    return [C_TYPES[re.sub(r"\s*\w+$", "", p)] for p in params]  # "const unsigned char *src" -> its type


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    calls: dict[str, list[Any]] = {}

    def function(name: str) -> Any:
        return lambda *args, **kwargs: calls.setdefault(name, list(args))

    monkeypatch.setattr(kernels, "_compiled", lambda: SimpleNamespace(get_function=function))
    return calls


@pytest.mark.parametrize(("name", "dtype"), [("preprocess_f32", np.float32), ("preprocess_f16", np.float16)])
def test_preprocess_launch_passes_what_the_kernel_declares(launched: dict[str, list[Any]], name: str,
                                                           dtype: type) -> None:
    GpuKernels(InputSpec(512, 1024), "BGR").preprocess(1, 720, 1280, 3840, 2, dtype, stream=None)
    assert [type(a) for a in launched[name]] == kernel_parameters(name)


def test_frames_beyond_the_int32_coordinate_range_are_refused(launched: dict[str, list[Any]]) -> None:
    gpu = GpuKernels(InputSpec(512, 1024))
    with pytest.raises(InputError, match="cannot resize"):
        gpu.preprocess(1, 720, kernels.MAX_FRAME_SIDE + 1, 3 * 40000, 2, np.float32, stream=None)
    with pytest.raises(InputError, match="cannot resize"):
        gpu.preprocess(1, 0, 1280, 3840, 2, np.float32, stream=None)
    assert launched == {}
    # the bound: the largest numerator (2 * (dst - 1) + 1) * src at the limit fits an int32
    assert (2 * kernels.MAX_FRAME_SIDE - 1) * kernels.MAX_FRAME_SIDE < 2**31
