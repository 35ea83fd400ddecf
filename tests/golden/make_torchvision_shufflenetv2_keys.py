"""Regenerate torchvision_shufflenetv2_keys.json: torchvision's ShuffleNetV2 state-dict keys and shapes.

The file lists, for each width, every (key, shape) of ``torchvision.models.shufflenet_v2_x*``
in state-dict order, without ``conv5.*`` and ``fc.*`` (the classifier parts a segmentation
backbone drops). tests/models/test_shufflenetv2.py checks edgeseg's backbone against it,
so ImageNet weights keep loading with ``strict=True``.

Needs torchvision (not an edgeseg dependency):  python tests/golden/make_torchvision_shufflenetv2_keys.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUTPUT = Path(__file__).with_name("torchvision_shufflenetv2_keys.json")
WIDTHS = ("x0_5", "x1_0", "x1_5", "x2_0")
DROPPED_PREFIXES = ("conv5.", "fc.")


def collect() -> dict:
    try:
        import torchvision
        import torchvision.models as tv_models
    except ImportError as exc:
        sys.exit(f"torchvision is needed to regenerate {OUTPUT.name}: {exc}\n  fix: pip install torchvision")
    widths = {}
    for width in WIDTHS:
        model = getattr(tv_models, f"shufflenet_v2_{width}")(weights=None)
        widths[width] = [
            [key, list(value.shape)]
            for key, value in model.state_dict().items()
            if not key.startswith(DROPPED_PREFIXES)
        ]
    return {
        "source": "torchvision.models.shufflenet_v2_<width>(weights=None).state_dict() minus conv5.* and fc.*",
        "torchvision_version": getattr(torchvision, "__version__", "unknown"),
        "widths": widths,
    }


def write(data: dict) -> None:
    # One (key, shape) per line keeps diffs readable.
    lines = ["{", f'"source": {json.dumps(data["source"])},',
             f'"torchvision_version": {json.dumps(data["torchvision_version"])},', '"widths": {']
    for i, (width, entries) in enumerate(data["widths"].items()):
        lines.append(f"{json.dumps(width)}: [")
        lines += [json.dumps(entry) + ("," if j < len(entries) - 1 else "") for j, entry in enumerate(entries)]
        lines.append("]" + ("," if i < len(data["widths"]) - 1 else ""))
    lines += ["}", "}"]
    OUTPUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    write(collect())
    print(f"wrote {OUTPUT}")
