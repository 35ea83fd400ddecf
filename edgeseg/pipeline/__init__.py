"""The pipeline (layer 4): build's steps, their cache, artifact discovery, validation and latency.

    build.py        order of `edgeseg build`; options.py: its options (BuildOptions, ValidationConfig, the
                    gates' defaults); build_steps.py: each step; build_data.py: the images it works on
                    (reference frames, synthetic sets, default calibration)
    step_cache.py   skip a step whose hashed inputs are unchanged
    artifacts.py    which file of a folder plays which role; machine facts
    validate.py     a candidate against PyTorch (reference.npz or the model), with gates
    bench.py        latency of every runner, interleaved
validate and bench run on the robot: nothing here imports torch at module level.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "BuildOptions": ".options",
    "BuildResult": ".build",
    "run_build": ".build",
    "validate_candidate": ".validate",
    "ValidationConfig": ".validate",
    "TorchReference": ".validate",
    "plan_bench": ".bench",
    "run_bench": ".bench",
}

__all__ = [*_LAZY]
__getattr__ = lazy_exports(__name__, _LAZY)
