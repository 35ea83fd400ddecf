"""Regenerate tests/golden/hrnet_w18_small_keys.json from timm (needs timm and torch).

    python tests/golden/hrnet_make_keys.py            # from the repository root

For ``hrnet_w18_small`` (v1) and ``hrnet_w18_small_v2`` it records the state-dict keys and
shapes of timm's ImageNet classifier without its classification-only parts
(incre_modules, downsamp_modules, final_layer, classifier). Those are the keys an edgeseg
``HRNetBackbone`` must have, so timm/official ImageNet weights load strictly. The script
refuses to write if timm grows a top-level module it does not know about.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_name("hrnet_w18_small_keys.json")
BACKBONE = {"conv1", "bn1", "conv2", "bn2", "layer1", "transition1", "transition2", "transition3",
            "stage2", "stage3", "stage4"}
CLASSIFICATION_ONLY = {"incre_modules", "downsamp_modules", "final_layer", "classifier"}
VARIANTS = {"w18_small_v1": "hrnet_w18_small", "w18_small_v2": "hrnet_w18_small_v2"}


def shape_text(shape: tuple[int, ...]) -> str:
    """``64x3x3x3``; ``""`` for a 0-d tensor (BatchNorm's num_batches_tracked). One line per key."""
    return "x".join(str(int(d)) for d in shape)


def main() -> int:
    import timm
    import torch

    sys.path.insert(0, str(REPO))
    from edgeseg.fileio import atomic_write_json

    golden: dict[str, object] = {"source": f"timm {timm.__version__}", "models": {}}
    for ours, theirs in VARIANTS.items():
        model = timm.create_model(theirs, pretrained=False)
        keys = {}
        for key, tensor in model.state_dict().items():
            top = key.split(".", 1)[0]
            if top in CLASSIFICATION_ONLY:
                continue
            if top not in BACKBONE:
                print(f"timm {theirs} has an unexpected module {top!r}; update this script", file=sys.stderr)
                return 1
            keys[key] = shape_text(tensor.shape)
        golden["models"][ours] = {"timm_name": theirs, "keys": keys}  # type: ignore[index]
        print(f"{theirs}: {len(keys)} backbone keys, torch {torch.__version__}")
    atomic_write_json(OUT, golden)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
