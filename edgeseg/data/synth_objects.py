"""Building blocks of the synthetic scenes: class ids, noise, colours, the camera and the
drawable objects (boxes, cylinders, people, poles). numpy only, vectorised per object."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("floor", (128, 64, 128)),
    ("wall", (102, 102, 156)),
    ("sky_ceiling", (70, 130, 180)),
    ("obstacle", (250, 170, 30)),
    ("person", (220, 20, 60)),
    ("pole", (153, 153, 153)),
)
FLOOR, WALL, SKY, OBSTACLE, PERSON, POLE = range(len(CLASSES))
MIN_POLE_HALF_WIDTH_PX = 1.5


# ---------------------------------------------------------------- noise and textures
def _hash(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """Integer lattice hash -> float in [0, 1) (vectorised, wraps on purpose)."""
    h = (ix.astype(np.int64) * 374761393 + iy.astype(np.int64) * 668265263 + salt * 2246822519) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    h = h ^ (h >> 16)
    return (h & 0xFFFF).astype(np.float32) / 65536.0


def value_noise(u: np.ndarray, v: np.ndarray, salt: int) -> np.ndarray:
    """Smooth value noise in [0, 1] at continuous coordinates (any shape)."""
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = (u - iu).astype(np.float32), (v - iv).astype(np.float32)
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    iu, iv = iu.astype(np.int64), iv.astype(np.int64)
    a, b = _hash(iu, iv, salt), _hash(iu + 1, iv, salt)
    c, d = _hash(iu, iv + 1, salt), _hash(iu + 1, iv + 1, salt)
    return (a + (b - a) * fu) * (1 - fv) + (c + (d - c) * fu) * fv


def fractal_noise(u: np.ndarray, v: np.ndarray, salt: int, octaves: int = 3) -> np.ndarray:
    total = np.zeros(np.broadcast(u, v).shape, np.float32)
    amp, norm = 1.0, 0.0
    for octave in range(octaves):
        total += amp * value_noise(u * (2**octave), v * (2**octave), salt + 101 * octave)
        norm += amp
        amp *= 0.5
    return total / norm


def _random_colour(rng: np.random.Generator, family: str | None = None) -> np.ndarray:
    """An RGB colour in [0, 1]; families overlap on purpose."""
    family = family or str(rng.choice(["grey", "warm", "cool", "vivid", "dark", "light"]))
    if family == "grey":
        g = rng.uniform(0.25, 0.8)
        return np.clip(g + rng.normal(0, 0.03, 3), 0, 1)
    if family == "warm":
        return np.clip(np.array([rng.uniform(0.5, 0.9), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.5)]), 0, 1)
    if family == "cool":
        return np.clip(np.array([rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.7), rng.uniform(0.5, 0.9)]), 0, 1)
    if family == "dark":
        return rng.uniform(0.03, 0.25, 3)
    if family == "light":
        return rng.uniform(0.7, 0.97, 3)
    return rng.uniform(0, 1, 3) ** rng.uniform(0.5, 1.5)


# ---------------------------------------------------------------- scene description
@dataclass
class _Camera:
    height: int
    width: int
    focal: float
    cx: float
    horizon: float  # image row of the horizon
    cam_h: float  # camera height above the floor, metres

    def project(self, x: float, y: float, z: float) -> tuple[float, float]:
        """World point (x right, y up from the floor, z forward) -> image (col, row)."""
        return self.cx + self.focal * x / z, self.horizon - self.focal * (y - self.cam_h) / z


def _polygon_mask(poly: np.ndarray, h: int, w: int) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Fill a convex polygon (Nx2 col,row): the bounding-box slices and the boolean mask in it."""
    x0, y0 = np.floor(poly.min(0)).astype(int)
    x1, y1 = np.ceil(poly.max(0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if x1 < x0 or y1 < y0:
        return None
    xs = np.arange(x0, x1 + 1, dtype=np.float32) + 0.5
    ys = np.arange(y0, y1 + 1, dtype=np.float32) + 0.5
    px, py = np.meshgrid(xs, ys)
    inside = np.ones(px.shape, bool)
    area = 0.0
    n = len(poly)
    for k in range(n):
        ax, ay = poly[k]
        bx, by = poly[(k + 1) % n]
        area += ax * by - bx * ay
    sign = 1.0 if area >= 0 else -1.0
    for k in range(n):
        ax, ay = poly[k]
        bx, by = poly[(k + 1) % n]
        inside &= sign * ((bx - ax) * (py - ay) - (by - ay) * (px - ax)) >= 0
    return (slice(y0, y1 + 1), slice(x0, x1 + 1)), inside


def _ellipse_mask(cx: float, cy: float, rx: float, ry: float, h: int, w: int):
    x0, x1 = max(int(cx - rx), 0), min(int(np.ceil(cx + rx)), w - 1)
    y0, y1 = max(int(cy - ry), 0), min(int(np.ceil(cy + ry)), h - 1)
    if x1 < x0 or y1 < y0:
        return None
    px, py = np.meshgrid(np.arange(x0, x1 + 1) + 0.5, np.arange(y0, y1 + 1) + 0.5)
    inside = ((px - cx) / max(rx, 0.5)) ** 2 + ((py - cy) / max(ry, 0.5)) ** 2 <= 1
    return (slice(y0, y1 + 1), slice(x0, x1 + 1)), inside


class _Canvas:
    """Image + label map painted far to near."""

    def __init__(self, image: np.ndarray, labels: np.ndarray) -> None:
        self.image, self.labels = image, labels
        self.h, self.w = labels.shape

    def paint(self, region, label: int, colour: np.ndarray, shade: np.ndarray | float = 1.0) -> None:
        if region is None:
            return
        (sy, sx), inside = region
        if not inside.any():
            return
        self.labels[sy, sx][inside] = label
        patch = self.image[sy, sx]
        value = np.broadcast_to(np.asarray(shade, np.float32), inside.shape)[..., None] * colour
        patch[inside] = np.clip(value[inside], 0, 1)

    def shadow(self, region, strength: float) -> None:
        if region is None:
            return
        (sy, sx), inside = region
        floor = inside & (self.labels[sy, sx] == FLOOR)
        self.image[sy, sx][floor] *= 1 - strength


def _surface_shade(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    salt = int(rng.integers(1, 1 << 30))
    u, v = np.meshgrid(np.arange(shape[1], dtype=np.float32), np.arange(shape[0], dtype=np.float32))
    return 0.85 + 0.3 * fractal_noise(u / scale, v / scale, salt, octaves=2)


def _draw_box(rng, cam: _Camera, canvas: _Canvas, x: float, z: float) -> None:
    bw, bh, bd = rng.uniform(0.3, 1.6), rng.uniform(0.3, 1.8), rng.uniform(0.3, 1.5)
    colour = _random_colour(rng)
    light = rng.uniform(0.55, 1.0)
    corners = {}
    for sx_ in (-1, 1):
        for sy_ in (0, 1):
            for sz_ in (0, 1):
                corners[(sx_, sy_, sz_)] = cam.project(x + sx_ * bw / 2, sy_ * bh, z + sz_ * bd)

    def poly(keys):
        return np.array([corners[k] for k in keys], np.float32)

    scale = max(4.0, cam.focal * bw / z / 4)
    # shadow on the floor first, then the visible faces back to front
    canvas.shadow(
        _polygon_mask(
            poly([(-1, 0, 0), (1, 0, 0), (1, 0, 1), (-1, 0, 1)]) + [bw * cam.focal / z * 0.15, 0], canvas.h, canvas.w
        ),
        rng.uniform(0.1, 0.45),
    )
    faces = []
    if x - bw / 2 > 0:  # left side face visible
        faces.append((poly([(-1, 0, 0), (-1, 0, 1), (-1, 1, 1), (-1, 1, 0)]), light * 0.7))
    if x + bw / 2 < 0:
        faces.append((poly([(1, 0, 0), (1, 0, 1), (1, 1, 1), (1, 1, 0)]), light * 0.7))
    if bh < cam.cam_h:  # top face visible from above
        faces.append((poly([(-1, 1, 0), (1, 1, 0), (1, 1, 1), (-1, 1, 1)]), min(1.0, light * 1.2)))
    faces.append((poly([(-1, 0, 0), (1, 0, 0), (1, 1, 0), (-1, 1, 0)]), light))
    for face, shade in faces:
        region = _polygon_mask(face, canvas.h, canvas.w)
        if region is not None:
            texture = _surface_shade(rng, region[1].shape, scale)
            canvas.paint(region, OBSTACLE, colour, shade * texture)


def _draw_cylinder(rng, cam: _Camera, canvas: _Canvas, x: float, z: float) -> None:
    radius, ch = rng.uniform(0.15, 0.6), rng.uniform(0.4, 1.6)
    colour = _random_colour(rng)
    c0, r0 = cam.project(x, 0, z)
    _, r1 = cam.project(x, ch, z)
    rx = cam.focal * radius / z
    ry = max(1.0, rx * abs(cam.cam_h - ch) / z * 0.6 + 0.5)
    canvas.shadow(_ellipse_mask(c0 + rx * 0.3, r0, rx * 1.3, ry * 1.5, canvas.h, canvas.w), rng.uniform(0.1, 0.4))
    body = _polygon_mask(
        np.array([[c0 - rx, r1], [c0 + rx, r1], [c0 + rx, r0], [c0 - rx, r0]], np.float32), canvas.h, canvas.w
    )
    if body is not None:
        (sy, sx), inside = body
        cols = (np.arange(sx.start, sx.stop) + 0.5 - c0) / max(rx, 1e-3)
        shade = rng.uniform(0.6, 1.0) * (0.45 + 0.55 * np.sqrt(np.clip(1 - cols**2, 0, 1)))
        canvas.paint(body, OBSTACLE, colour, np.broadcast_to(shade[None], inside.shape))
        canvas.paint(_ellipse_mask(c0, r0, rx, ry, canvas.h, canvas.w), OBSTACLE, colour, shade.mean())
    top = 1.1 if ch < cam.cam_h else 0.6
    canvas.paint(_ellipse_mask(c0, r1, rx, ry, canvas.h, canvas.w), OBSTACLE, colour, top * rng.uniform(0.7, 1.0))


def _quad(canvas: _Canvas, corners: list[list[float]]) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """The region (see _polygon_mask) of a four-cornered polygon given as [[col, row], ...]."""
    return _polygon_mask(np.array(corners, np.float32), canvas.h, canvas.w)


def _draw_person(rng, cam: _Camera, canvas: _Canvas, x: float, z: float) -> None:
    tall = rng.uniform(1.1, 1.95)  # children to adults
    f = cam.focal / z
    cb, rb = cam.project(x, 0, z)  # feet centre
    px = lambda metres: metres * f  # noqa: E731
    shirt, trousers = _random_colour(rng), _random_colour(rng)
    skin = np.array([0.9, 0.7, 0.55]) * rng.uniform(0.35, 1.0)
    hair = _random_colour(rng, "dark") if rng.random() < 0.8 else _random_colour(rng)
    lean = rng.uniform(-0.08, 0.08) * tall  # lateral offset of the head relative to the feet
    stride = rng.uniform(0.0, 0.35) * tall
    hip_row = rb - px(tall * 0.48)
    shoulder_row = rb - px(tall * 0.82)
    head_row = rb - px(tall * 0.91)
    half_w = px(tall * 0.13)
    light = rng.uniform(0.6, 1.0)
    canvas.shadow(_ellipse_mask(cb + px(0.2), rb, px(0.45), max(1.0, px(0.1)), canvas.h, canvas.w), 0.3)
    leg_w = px(tall * 0.06)
    for side in (-1, 1):  # legs
        foot = cb + side * stride / 2 * f
        hip = cb + lean * 0.5 * f + side * half_w * 0.45
        legs = [[hip - leg_w, hip_row], [hip + leg_w, hip_row], [foot + leg_w * 0.8, rb], [foot - leg_w * 0.8, rb]]
        canvas.paint(_quad(canvas, legs), PERSON, trousers, light * (0.85 if side < 0 else 1.0))
    torso_c = cb + lean * 0.8 * f
    waist = cb + lean * 0.5 * f
    torso = [[torso_c - half_w, shoulder_row], [torso_c + half_w, shoulder_row],
             [waist + half_w * 0.85, hip_row + px(0.05)], [waist - half_w * 0.85, hip_row + px(0.05)]]
    canvas.paint(_quad(canvas, torso), PERSON, shirt, light)
    arm_w = px(tall * 0.035)
    for side in (-1, 1):  # arms, swinging
        swing = rng.uniform(-0.25, 0.25) * tall * f
        top_x = torso_c + side * (half_w + arm_w * 0.6)
        hand_x = top_x + swing + side * arm_w * 2
        arm = [[top_x - arm_w, shoulder_row], [top_x + arm_w, shoulder_row],
               [hand_x + arm_w, hip_row + px(0.1)], [hand_x - arm_w, hip_row + px(0.1)]]
        canvas.paint(_quad(canvas, arm), PERSON, shirt, light * 0.8)
    head_x = cb + lean * f
    head_r = px(tall * 0.065)
    canvas.paint(_ellipse_mask(head_x, head_row, head_r, head_r * 1.25, canvas.h, canvas.w), PERSON, skin, light)
    canvas.paint(_ellipse_mask(head_x, head_row - head_r * 0.5, head_r * 1.05, head_r * 0.8, canvas.h, canvas.w),
                 PERSON, hair, light)


def _draw_pole(rng, cam: _Camera, canvas: _Canvas, x: float, z: float) -> None:
    radius = rng.uniform(0.025, 0.09)
    top = rng.uniform(2.0, 8.0)
    colour = _random_colour(rng, str(rng.choice(["grey", "dark", "vivid", "light"])))
    c0, r0 = cam.project(x, 0, z)
    _, r1 = cam.project(x, top, z)
    # At least 3 px wide at the rendered size: a thinner pole is a label the pixels (after blur and
    # noise) barely show, and a model whose logits live at 1/4 resolution cannot resolve it -- noise
    # in the score rather than difficulty.
    half = max(cam.focal * radius / z, MIN_POLE_HALF_WIDTH_PX)
    lean = rng.uniform(-0.02, 0.02) * (r0 - r1)
    region = _polygon_mask(
        np.array([[c0 - half + lean, r1], [c0 + half + lean, r1], [c0 + half, r0], [c0 - half, r0]], np.float32),
        canvas.h,
        canvas.w,
    )
    if region is None:
        return
    (sy, sx), inside = region
    cols = (np.arange(sx.start, sx.stop) + 0.5 - c0) / max(half, 1e-3)
    shade = rng.uniform(0.5, 1.0) * (0.6 + 0.4 * np.clip(1 - np.abs(cols), 0, 1))
    canvas.paint(region, POLE, colour, np.broadcast_to(shade[None], inside.shape))
    if rng.random() < 0.4:  # a sign on the pole
        sign_w, sign_h = cam.focal * rng.uniform(0.2, 0.5) / z, cam.focal * rng.uniform(0.2, 0.5) / z
        row = r1 + (r0 - r1) * rng.uniform(0.0, 0.3)
        canvas.paint(
            _polygon_mask(
                np.array(
                    [
                        [c0 - sign_w / 2, row],
                        [c0 + sign_w / 2, row],
                        [c0 + sign_w / 2, row + sign_h],
                        [c0 - sign_w / 2, row + sign_h],
                    ],
                    np.float32,
                ),
                canvas.h,
                canvas.w,
            ),
            POLE,
            _random_colour(rng),
            1.0,
        )


_DRAW = {"box": _draw_box, "cylinder": _draw_cylinder, "person": _draw_person, "pole": _draw_pole}
