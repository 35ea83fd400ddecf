"""torch ``Dataset`` wrappers over a ``FolderDataset`` (layer 3).

Training samples are augmented with a generator seeded by (seed, epoch, index), so
an epoch is reproducible whatever the number of loader workers, and a resumed run
sees the same augmentations as an uninterrupted one. Inputs are normalised with
``edgeseg.spec.preprocess`` (the one reference preprocessing) after augmentation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..spec import InputSpec, preprocess, resize_mask_nearest
from .augment import AugmentConfig, augment
from .folder import FolderDataset

EVAL_AT = ("label", "input")  # score at the label's own resolution (the official protocol) or at the model's input


def collate_full_masks(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Inputs stacked, masks kept as a list: at the label's resolution images of one batch may differ in size."""
    return torch.stack([inputs for inputs, _ in batch]), [mask for _, mask in batch]


class SegmentationDataset(Dataset):
    def __init__(
        self,
        folder: FolderDataset,
        spec: InputSpec,
        *,
        train: bool,
        seed: int = 0,
        augment_config: AugmentConfig = AugmentConfig(),
        eval_at: str = "input",
    ) -> None:
        """``eval_at`` (evaluation only): "input" resizes each mask to the model size (nearest); "label" keeps it
        at its own resolution, for logits upsampled to it (batch with ``collate_full_masks``)."""
        if eval_at not in EVAL_AT:
            raise ValueError(f"eval_at must be one of {EVAL_AT}, not {eval_at!r}")
        self.eval_at = eval_at
        self.folder = folder
        self.spec = spec
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.augment_config = augment_config

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.folder.load(index)
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, mask = augment(image, mask, self.spec.size, rng, self.augment_config)
        elif self.eval_at == "input":
            mask = resize_mask_nearest(mask, self.spec.height, self.spec.width)  # evaluation at model resolution
        tensor = torch.from_numpy(preprocess(np.ascontiguousarray(image), self.spec)[0])
        return tensor, torch.from_numpy(mask.astype(np.int64))
