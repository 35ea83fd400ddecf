"""``edgeseg data``: dataset tools (``synth``: procedural robot-camera scenes)."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import POSITIVE, SIZE, quote, summary_table


@click.group("data")
def data_group() -> None:
    """Dataset tools: generate synthetic robot-camera scenes."""


@data_group.command("synth")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write images/, masks/, classes.json into.",
)
@click.option("--num", type=POSITIVE, default=1000, show_default=True, help="Number of scenes.")
@click.option("--size", type=SIZE, default="512x1024", show_default=True, help="Scene size HxW.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed -> same bytes.")
@click.option(
    "--workers",
    type=POSITIVE,
    default=1,
    show_default=True,
    help="Processes; the output does not depend on it.",
)
@click.option("--format", "image_format", type=click.Choice(["jpg", "png"]), default="jpg", show_default=True)
@click.option(
    "--start",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Index of the first scene (to extend an existing set).",
)
@click.option("--force", is_flag=True, help="Replace the scenes already in --out (another seed, size or format).")
def synth_cmd(
    out: Path, num: int, size: tuple[int, int], seed: int, workers: int, image_format: str, start: int, force: bool
) -> None:
    """Render synthetic robot-camera scenes with exact masks (floor, wall, sky/ceiling, obstacle, person, pole)."""
    import time

    from ..data.generate import SynthConfig, write_synthetic_dataset
    from ..fileio import prepare_out_dir, remove_if_empty
    from ._common import progress

    _check_existing(out, seed, size, image_format, force)
    out, created = prepare_out_dir(out)
    config = SynthConfig(
        out=out,
        num=num,
        height=size[0],
        width=size[1],
        seed=seed,
        workers=workers,
        image_format=image_format,
        start=start,
    )
    began = time.perf_counter()
    bar = iter(progress(range(num), label="rendering scenes", length=num))

    def advance(_stem: str) -> None:
        next(bar, None)

    try:
        write_synthetic_dataset(config, on_item=advance)
    except BaseException:
        if created:  # a failure before the first file leaves no empty --out behind
            remove_if_empty(out)
        raise
    for _ in bar:  # let the bar finish cleanly
        pass
    seconds = time.perf_counter() - began
    summary_table(
        f"{num} synthetic scenes in {seconds:.1f} s ({num / seconds:.1f} images/s)",
        [("images", str(out / "images")), ("masks", str(out / "masks")), ("classes", str(out / "classes.json"))],
        _next_commands(out, num, size, seed),
    )


def _check_existing(out: Path, seed: int, size: tuple[int, int], image_format: str, force: bool) -> None:
    """Scenes of another seed, size or format (or other images) in --out would mix two sets: refused unless
    --force, which removes them first. The same settings extend the set (--start)."""
    from ..errors import ConfigError
    from ..fileio import read_json
    from ..images import list_images

    existing = list_images(out / "images") if (out / "images").is_dir() else []
    if not existing:
        return
    record = read_json(out / "synth.json", what="synth.json") if (out / "synth.json").is_file() else {}
    wanted = {"seed": seed, "height": size[0], "width": size[1], "image_format": image_format}
    differs = {k: record.get(k) for k, v in wanted.items() if record.get(k) != v}
    if not differs:
        return
    if force:
        for folder in ("images", "masks"):
            for path in (out / folder).iterdir() if (out / folder).is_dir() else []:
                if path.is_file():
                    path.unlink()
        return
    found = ", ".join(f"{k} {v}" for k, v in differs.items()) if record else "images not made by edgeseg data synth"
    raise ConfigError(f"{out} already holds {len(existing)} other scenes: writing these would mix two sets",
                      expected=", ".join(f"{k} {v}" for k, v in wanted.items()), found=found,
                      fix=f"choose another --out, or pass --force to replace the {len(existing)} scenes in {out}")


SPEED_MIN_SIDE = 128  # the SPEED decoders' pyramid needs an input of at least 128x128
SMALL_SIZE_MODEL = "shufflenetv2_x0_5_deeplabv3plus_sep"  # trains at any multiple of 32
MIN_VAL_SCENES = 20  # fewer make a noisy best-epoch choice


def _next_commands(out: Path, num: int, size: tuple[int, int], seed: int) -> list[str]:
    """Runnable as printed: a validation set from another seed (unless it exists), then training on both with a
    model that accepts this size."""
    train, val = out, out.parent / ("val" if out.name == "train" else f"{out.name or 'synth'}-val")
    if out.name == "val" and (out.parent / "train").is_dir():  # this was the validation set of .../train
        train, val = out.parent / "train", out
    hw = f"{size[0]}x{size[1]}"
    commands = [] if val.exists() else [
        f"edgeseg data synth --out {quote(val)} --num {max(MIN_VAL_SCENES, num // 10)} --size {hw} --seed {seed + 1}"]
    model = "shufflenetv2_x0_5_mdspp" if min(size) >= SPEED_MIN_SIDE else SMALL_SIZE_MODEL
    commands.append(f"edgeseg train --model {model} --data {quote(train)} --val-data {quote(val)} "
                    f"--input-size {hw} --out runs/demo")
    return commands
