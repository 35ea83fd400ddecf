"""Write a synthetic dataset in the folder format (``edgeseg data synth``).

Image ``i`` is rendered from (seed, i) alone, so the files are byte-identical whatever
the number of workers. Every file is written atomically; ``synth.json`` records the
parameters so the set can be regenerated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError
from ..fileio import atomic_open, atomic_write_json
from .synth import SYNTH_VERSION, classes_json, render_scene

JPEG_QUALITY = 92


@dataclass(frozen=True)
class SynthConfig:
    out: Path
    num: int
    height: int
    width: int
    seed: int = 0
    workers: int = 1
    image_format: str = "jpg"  # jpg or png
    start: int = 0  # index of the first image (to extend a set)


def _write_one(job: tuple[Path, int, int, int, int, str]) -> str:
    from PIL import Image

    out, seed, index, height, width, fmt = job
    image, labels = render_scene(seed, index, height, width)
    stem = f"{seed:04d}_{index:06d}"
    with atomic_open(out / "images" / f"{stem}.{fmt}") as handle:
        if fmt == "jpg":
            Image.fromarray(image).save(handle, format="JPEG", quality=JPEG_QUALITY)
        else:
            Image.fromarray(image).save(handle, format="PNG")
    with atomic_open(out / "masks" / f"{stem}.png") as handle:
        Image.fromarray(labels).save(handle, format="PNG")
    return stem


def write_synthetic_dataset(config: SynthConfig, on_item: Callable[[str], None] | None = None) -> list[str]:
    """Render ``config.num`` scenes into ``config.out``; returns the stems written."""
    if config.num < 1:
        raise ConfigError("nothing to generate", expected="--num >= 1", found=str(config.num))
    if config.image_format not in ("jpg", "png"):
        raise ConfigError("unknown image format", expected="jpg or png", found=config.image_format)
    if config.workers < 1:
        raise ConfigError("--workers must be at least 1", found=str(config.workers))
    if config.height < 32 or config.width < 32:
        raise ConfigError("scene size too small", expected="at least 32x32", found=f"{config.height}x{config.width}")
    out = Path(config.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "classes.json", classes_json())
    record = {k: v for k, v in asdict(config).items() if k not in ("out", "workers")}
    atomic_write_json(out / "synth.json", {**record, "synth_version": SYNTH_VERSION})
    jobs = [
        (out, config.seed, i, config.height, config.width, config.image_format)
        for i in range(config.start, config.start + config.num)
    ]
    stems = []
    workers = min(config.workers, len(jobs))
    if workers == 1:
        for job in jobs:
            stems.append(_write_one(job))
            if on_item:
                on_item(stems[-1])
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for stem in pool.imap(_write_one, jobs, chunksize=4):
                stems.append(stem)
                if on_item:
                    on_item(stem)
    return stems
