"""The images a build works on (layer 4): the reference frames of reference.npz (the --val data, else the
calibration images), and the synthetic sets and default calibration folder used when none is given."""

from __future__ import annotations

from pathlib import Path

from ..data.datasets import DatasetSpec, as_dataset_spec, open_dataset, summary
from ..data.folder import FolderDataset
from ..data.generate import SynthConfig, write_synthetic_dataset
from ..errors import ConfigError, InputError
from ..images import list_images, save_png
from ..quant.calib_data import BagCalibSource, ImageListSource, folder_images, write_bag_frames
from ..reference import DEFAULT_SAMPLES, default_sample_count
from ..spec import InputSpec
from .build_steps import Log
from .options import SYNTH_CALIB_SEED, SYNTH_VAL_SEED, BuildOptions


def reference_samples(options: BuildOptions, spec: InputSpec, num_classes: int, out: Path,
                      log: Log) -> tuple[list[Path], list[Path], str]:
    """(images, masks, where from) for reference.npz: the validation set, else the calibration images."""
    val_dir: DatasetSpec | Path | None = options.val
    if val_dir is None and options.demo:
        val_dir = synthetic_set(out / "val_synth", 32, spec.size, SYNTH_VAL_SEED, log)
    dataset = None
    if val_dir is not None:
        dataset = _labelled(val_dir, num_classes)
        images, masks = [s.image for s in dataset.samples], [s.mask for s in dataset.samples]
        source = f"validation set {val_dir}"
        log(f"validation data {summary(dataset)}")
    else:
        calib_dir = options.calib or default_calib(out, spec, log)
        where = f"calibration images {calib_dir}"
        if isinstance(calib_dir, BagCalibSource):  # as PNG files: the export step hashes and reads files
            calib_dir = write_bag_frames(calib_dir, out / "calib_bag_frames", options.val_images or DEFAULT_SAMPLES)
        # a folder in the dataset layout: its images/ only, never a mask (as calibration reads it)
        images = list(calib_dir.paths) if isinstance(calib_dir, ImageListSource) else folder_images(calib_dir)
        masks, source = [], where
        if not images:
            raise InputError(f"no images in {calib_dir}", expected="*.jpg / *.png files",
                             fix="pass --calib DIR with frames from the robot's camera")
    count = options.val_images or default_sample_count(*spec.size, available=len(images))
    picked = _evenly(len(images), count)
    source += f" ({len(picked)} of {len(images)} images)"
    picked_masks = [masks[i] for i in picked] if masks else []
    if dataset is not None and dataset.label_map is not None:  # raw ids on disk: reference.npz wants train ids
        picked_masks = _train_id_masks(dataset, picked_masks, out / "val_masks")
    return [images[i] for i in picked], picked_masks, source


def _train_id_masks(dataset: FolderDataset, masks: list[Path], folder: Path) -> list[Path]:
    """``masks`` mapped to train ids, written once into ``folder`` (their hashes key the export step)."""
    return [save_png(folder / f"{path.stem}.png", dataset.read_mask(path)) for path in masks]


def _labelled(val: DatasetSpec | Path, num_classes: int) -> FolderDataset:
    """The --val-data data, unverified: a folder used whole (unless it names a split), a public dataset's val split."""
    spec = as_dataset_spec(val)
    try:
        return open_dataset(spec, None if spec.is_folder else "val", verify=False, num_classes=num_classes,
                            classes_hint="pass the --weights trained on these classes")
    except (InputError, ConfigError) as exc:
        fix = exc.fix
        if spec.is_folder and ("have no mask" in exc.problem or "not a dataset folder" in exc.problem):
            fix = ("--val-data needs labelled images (DIR/images + DIR/masks); to validate without ground truth "
                   "leave --val-data out (calibration frames are used)")
        raise type(exc)(f"--val-data {spec}: {exc.problem}", expected=exc.expected, found=exc.found, fix=fix) from None


def _evenly(total: int, count: int) -> list[int]:
    """``count`` indices spread over ``total`` items (all when count >= total)."""
    if count >= total:
        return list(range(total))
    return sorted({round(i * (total - 1) / max(count - 1, 1)) for i in range(count)})


def synthetic_set(folder: Path, num: int, size: tuple[int, int], seed: int, log: Log) -> Path:
    """Render a deterministic synthetic image set once (reused when complete)."""
    images = folder / "images"
    if not (images.is_dir() and len(list(images.iterdir())) >= num):
        log(f"rendering {num} synthetic images (seed {seed}) into {folder}")
        write_synthetic_dataset(SynthConfig(out=folder, num=num, height=size[0], width=size[1], seed=seed))
    return folder


def default_calib(out: Path, spec: InputSpec, log: Log) -> Path:
    shipped = Path("calib")
    found = list_images(shipped) if shipped.is_dir() else []
    if found:
        log(f"calibration images: {shipped}/ ({len(found)} images)")
        return shipped
    log("no --calib and no ./calib folder: using synthetic calibration scenes (pass --calib DIR with real frames)")
    return synthetic_set(out / "calib_synth", 64, spec.size, SYNTH_CALIB_SEED, log) / "images"
