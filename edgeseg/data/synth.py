"""Procedural robot-camera scenes with exact masks (layer 3 package, numpy only).

Each scene is ray-cast from a camera at robot height: a textured floor plane in
perspective, corridor/room walls, a sky or ceiling above them, then obstacles (boxes,
cylinders), people-like silhouettes and thin poles standing on the floor, drawn far to
near so nearer things occlude farther ones. Appearance is randomised so that classes
overlap in colour and texture (a grey box on a grey floor, a wall the colour of a
shirt); lighting, shadows, noise and blur vary per image. The mask is the painter's
label map before any photometric effect, so it is exact.

Determinism: image ``i`` of a set with seed ``s`` is rendered from its own generator
seeded with ``(s, i)``, so the bytes depend only on (seed, index, size), never on the
number of workers or the order in which images are produced.
"""

from __future__ import annotations

import numpy as np

from ..palette import class_palette
from .synth_objects import (  # noqa: F401  (CLASSES and the ids are part of this module's API)
    _DRAW,
    CLASSES,
    FLOOR,
    OBSTACLE,
    PERSON,
    POLE,
    SKY,
    WALL,
    _Camera,
    _Canvas,
    _random_colour,
    fractal_noise,
    value_noise,
)

SYNTH_VERSION = 2  # bump when the renderer's output changes (2: poles at least 3 px wide)


def classes_json() -> dict:
    """Class names with the colours of ``edgeseg.palette`` (only written out: rendering never uses them),
    so the data set, the reports and the robot's overlays show each class in the same colour."""
    colours = class_palette(len(CLASSES))
    return {"classes": [{"name": n, "color": [int(v) for v in colours[i]]} for i, (n, _) in enumerate(CLASSES)]}


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for one image: depends on (seed, index) only."""
    return np.random.default_rng(np.random.SeedSequence([SYNTH_VERSION, int(seed), int(index)]))


def _texture(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, base: np.ndarray) -> np.ndarray:
    """A surface texture at surface coordinates (u, v): HxWx3 float in [0, 1]."""
    salt = int(rng.integers(1, 1 << 30))
    kind = rng.choice(["plain", "noise", "tiles", "stripes", "planks"])
    shade = 1.0 + rng.uniform(0.05, 0.35) * (fractal_noise(u * 1.5, v * 1.5, salt) - 0.5)
    if kind == "tiles":
        size = rng.uniform(0.3, 1.2)
        checker = ((np.floor(u / size) + np.floor(v / size)) % 2).astype(np.float32)
        shade = shade * (1 - rng.uniform(0.05, 0.3) * checker)
        grout = (np.minimum((u / size) % 1, (v / size) % 1) < 0.04).astype(np.float32)
        shade = shade * (1 - 0.4 * grout)
    elif kind == "stripes":
        period = rng.uniform(0.2, 1.0)
        shade = shade * (1 - rng.uniform(0.05, 0.3) * (np.sin(2 * np.pi * u / period) > 0))
    elif kind == "planks":
        width = rng.uniform(0.15, 0.4)
        row = np.floor(v / width)
        grain = value_noise(u * 0.5 + row * 7.3, row, salt + 7)
        shade = shade * (0.85 + 0.3 * grain) * (1 - 0.35 * ((v / width) % 1 < 0.05))
    elif kind == "noise":
        shade = shade * (0.75 + 0.5 * fractal_noise(u * 6, v * 6, salt + 3, octaves=2))
    return np.clip(shade[..., None] * base, 0, 1)


def _layout(rng: np.random.Generator, cam: _Camera) -> tuple[np.ndarray, np.ndarray, dict]:
    """Ray-cast floor / walls / sky: labels, per-pixel surface coords, per-pixel depth."""
    h, w = cam.height, cam.width
    cols = (np.arange(w, dtype=np.float32) - cam.cx + 0.5) / cam.focal
    rows = (cam.horizon - np.arange(h, dtype=np.float32) - 0.5) / cam.focal  # up positive
    dx, dy = np.meshgrid(cols, rows)
    inf = np.float32(1e9)
    left, right = -rng.uniform(1.2, 6.0), rng.uniform(1.2, 6.0)
    back = rng.uniform(8.0, 40.0) if rng.random() < 0.7 else 1e6
    wall_h = rng.uniform(2.2, 5.0) if rng.random() < 0.85 else rng.uniform(0.6, 1.5)  # low walls: more sky
    open_side = rng.random()
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(dy < 0, cam.cam_h / -dy, inf)
        t_left = np.where(dx < 0, left / dx, inf)
        t_right = np.where(dx > 0, right / dx, inf)
    t_back = np.full_like(dx, back)
    if open_side < 0.15:
        t_left[:] = inf
    elif open_side < 0.3:
        t_right[:] = inf
    walls = np.stack([t_left, t_right, t_back])
    which = np.argmin(walls, axis=0)
    t_wall = np.take_along_axis(walls, which[None], 0)[0]
    wall_y = cam.cam_h + dy * t_wall
    wall_hit = (t_wall < t_floor) & (wall_y <= wall_h) & (t_wall < inf)
    labels = np.full((h, w), SKY, np.uint8)
    labels[t_floor < inf] = FLOOR
    labels[wall_hit] = WALL
    depth = np.where(wall_hit, t_wall, np.where(t_floor < inf, t_floor, inf))
    # surface coordinates for texturing
    xw, zw = dx * t_floor, t_floor
    wall_u = np.where(which == 2, dx * t_wall, t_wall)  # along the wall
    geometry = {
        "floor_uv": (xw, zw),
        "wall_uv": (wall_u, wall_y),
        "which": which,
        "wall_h": wall_h,
        "bounds": (left, right, min(back, 40.0)),
        "dy": dy,
        "dx": dx,
    }
    return labels, depth, geometry


# ---------------------------------------------------------------- photometric effects
def _box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur via cumulative sums (edge clamped)."""
    if radius <= 0:
        return image
    out = image
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius + 1, radius)
        padded = np.pad(out, pad, mode="edge")
        csum = np.cumsum(padded, axis=axis, dtype=np.float32)
        n = out.shape[axis]
        hi = np.take(csum, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
        lo = np.take(csum, np.arange(0, n), axis=axis)
        out = (hi - lo) / (2 * radius + 1)
    return out


def render_scene(seed: int, index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (uint8 HxWx3 RGB image, uint8 HxW label map)."""
    rng = image_rng(seed, index)
    focal = width * rng.uniform(0.45, 0.8)
    cam = _Camera(
        height,
        width,
        focal,
        width / 2 + rng.uniform(-0.05, 0.05) * width,
        height * rng.uniform(0.3, 0.55),
        rng.uniform(0.4, 1.4),
    )
    labels, _depth, geo = _layout(rng, cam)
    image = np.zeros((height, width, 3), np.float32)

    xw, zw = geo["floor_uv"]
    floor_mask = labels == FLOOR
    floor_tex = _texture(rng, np.where(floor_mask, xw, 0), np.where(floor_mask, zw, 0), _random_colour(rng))
    fade = np.exp(-np.where(floor_mask, zw, 0) / rng.uniform(15, 60))[..., None]  # distance haze
    image[floor_mask] = (floor_tex * fade + (1 - fade) * 0.6)[floor_mask]

    wall_mask = labels == WALL
    wall_u, wall_v = geo["wall_uv"]
    wall_colours = [_random_colour(rng) for _ in range(3)]
    for k in range(3):
        sel = wall_mask & (geo["which"] == k)
        if sel.any():
            tex = _texture(rng, np.where(sel, wall_u, 0), np.where(sel, wall_v, 0), wall_colours[k])
            image[sel] = tex[sel] * (0.7 + 0.3 * k / 2)

    sky_mask = labels == SKY
    if rng.random() < 0.5:  # outdoor sky: vertical gradient + clouds
        top, bottom = _random_colour(rng, "cool"), _random_colour(rng, "light")
        t = (np.arange(height, dtype=np.float32) / max(cam.horizon, 1)).clip(0, 1)[:, None, None]
        sky = top * (1 - t) + bottom * t
        clouds = fractal_noise(geo["dx"] * 4, geo["dy"] * 8, int(rng.integers(1, 1 << 30)))
        sky = sky + rng.uniform(0, 0.5) * np.clip(clouds - 0.5, 0, 1)[..., None]
    else:  # ceiling: flat colour with light panels
        sky = np.broadcast_to(_random_colour(rng, str(rng.choice(["grey", "light", "warm"]))), (height, width, 3))
        with np.errstate(divide="ignore"):
            cu = geo["dx"] / np.maximum(geo["dy"], 1e-3)
            cv = 1 / np.maximum(geo["dy"], 1e-3)
        panels = ((np.abs(cu) < 0.3) & ((cv % 3) < 0.8)).astype(np.float32)[..., None]
        sky = np.clip(sky * 0.85 + panels * 0.5, 0, 1)
    image[sky_mask] = np.clip(sky, 0, 1)[sky_mask]

    canvas = _Canvas(image, labels)
    left, right, back = geo["bounds"]
    kinds = ["box", "cylinder", "person", "pole"]
    count = int(rng.integers(2, 11))
    objects = []
    for _ in range(count):
        kind = str(rng.choice(kinds, p=[0.3, 0.2, 0.28, 0.22]))
        z = float(1.5 + (min(back - 1.0, 25.0) - 1.5) * rng.random() ** 1.7)  # mostly near the robot
        margin = 0.15 if kind == "pole" else 0.5
        x = float(rng.uniform(max(left, -12) + margin, min(right, 12) - margin))
        objects.append((z, kind, x))
    for z, kind, x in sorted(objects, reverse=True):  # far to near: nearer ones occlude
        _DRAW[kind](rng, cam, canvas, x, z)

    # lighting: global gain, colour cast, a soft light gradient, then blur and sensor noise
    gain = rng.uniform(0.45, 1.35)
    cast = 1 + rng.normal(0, 0.08, 3)
    gx = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    gy = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 1 + rng.uniform(0, 0.35) * (np.cos(angle) * gx + np.sin(angle) * gy)
    image = image * (gain * gradient)[..., None] * cast
    blur = int(rng.choice([0, 0, 1, 1, 2])) * max(1, width // 512)
    image = _box_blur(image, blur)
    image = image + rng.normal(0, rng.uniform(0.005, 0.04), image.shape).astype(np.float32)
    pixels = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return pixels, labels
