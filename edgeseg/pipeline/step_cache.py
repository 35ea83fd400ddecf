"""Skip-if-unchanged build steps (layer 4).

Each step of ``edgeseg build`` declares a key (a dict of everything its result depends
on: input file hashes, options, edgeseg version) and its output files. The step's
record in ``<build>/steps.json`` holds that key and the hashes of the outputs it wrote.
A step is skipped when the key is unchanged and every output still exists with the
recorded hash; anything else (an interrupted run, an edited file, ``--force``) reruns it.
The record is written after the outputs, atomically, so a crash between the two only
costs a rerun.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_json, sha256_file

STATE_FILE = "steps.json"


def known_fields(cls: type[Any], data: Any, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The entries of ``data`` that name a field of the dataclass ``cls`` (less ``skip``): a recorded result's
    ``from_dict`` ignores keys it does not know (derived ones, an older or newer edgeseg's)."""
    return {f.name: data[f.name] for f in fields(cls) if f.name in data and f.name not in skip}


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class StepOutcome:
    name: str
    skipped: bool
    outputs: list[Path]
    result: Any = None  # what the step function returned (or the recorded one, typed again, when skipped)


class StepRunner:
    def __init__(self, build_dir: Path, *, force: bool = False, log: Callable[[str], None] = print) -> None:
        self.build_dir = Path(build_dir)
        self.force = force
        self.log = log
        self.state_path = self.build_dir / STATE_FILE
        self.state: dict[str, Any] = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}  # no or unreadable record: every step reruns

    def is_fresh(self, name: str, key: dict[str, Any], outputs: list[Path]) -> bool:
        record = self.state.get(name)
        if self.force or not isinstance(record, dict) or record.get("key") != key_digest(key):
            return False
        recorded = record.get("outputs", {})
        for path in outputs:
            if not path.is_file() or recorded.get(path.name) != sha256_file(path):
                return False
        return True

    def run(self, name: str, key: dict[str, Any], outputs: list[Path], fn: Callable[[], Any],
            result_type: type[Any] | None = None) -> StepOutcome:
        """Run ``fn`` unless the step is fresh. ``fn`` returns a JSON-able summary (or None), or, with
        ``result_type``, a typed result (or None): steps.json holds its ``to_dict()`` and a skipped step returns
        ``result_type.from_dict`` of it, so both paths hand back the same type. A recorded summary that no longer
        reads as ``result_type`` (written by an older edgeseg) reruns the step."""
        if self.is_fresh(name, key, outputs):
            recorded = self.state[name].get("summary")
            result = recorded
            if result_type is not None and recorded is not None:
                try:
                    result = result_type.from_dict(recorded)
                except (KeyError, TypeError, ValueError, AttributeError):
                    result = _UNREADABLE
            if result is not _UNREADABLE:
                self.log(f"[{name}] up to date, skipped")
                return StepOutcome(name, True, outputs, result)
        self.log(f"[{name}] running")
        result = fn()
        summary = result.to_dict() if result_type is not None and result is not None else result
        self.state[name] = {
            "key": key_digest(key),
            "outputs": {p.name: sha256_file(p) for p in outputs if p.is_file()},
            "summary": summary,
        }
        atomic_write_json(self.state_path, self.state)
        return StepOutcome(name, False, outputs, result)


_UNREADABLE = object()  # a recorded summary that is not the step's result type any more
