"""Numbers that compare a candidate's logits with a reference's (layer 0, numpy only).

``ParityTally`` accumulates over images: logit errors, cosine similarity, argmax
agreement, the candidate's confusion against the reference's predictions, and, where
ground truth exists, both models' confusion against it. It also keeps the K images
with the lowest agreement for the disagreement overlays.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ArtifactError, InputError
from .metrics import IGNORE_INDEX, confusion_matrix, iou_per_class, mean_iou, pixel_accuracy


def _finite_or_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass
class _Worst:
    agreement: float
    name: str
    frame: np.ndarray
    reference: np.ndarray
    candidate: np.ndarray


@dataclass
class ParityTally:
    num_classes: int
    keep_worst: int = 4
    max_abs_error: float = 0.0
    abs_error_sum: float = 0.0
    values: int = 0
    nonfinite: int = 0
    dot: float = 0.0
    reference_sq: float = 0.0
    candidate_sq: float = 0.0
    agreeing_pixels: int = 0
    pixels: int = 0
    per_image: list[dict[str, Any]] = field(default_factory=list)
    vs_reference: np.ndarray | None = None
    truth_reference: np.ndarray | None = None
    truth_candidate: np.ndarray | None = None
    truth_images: int = 0
    _worst: list[tuple[float, int, _Worst]] = field(default_factory=list)

    def __post_init__(self) -> None:
        shape = (self.num_classes, self.num_classes)
        self.vs_reference = np.zeros(shape, dtype=np.int64)

    def add(self, name: str, reference: np.ndarray, candidate: np.ndarray, frame: np.ndarray | None = None,
            truth: np.ndarray | None = None) -> dict[str, Any]:
        """Compare one image's 1xCxHxW logits; ``truth`` is an HxW label map at model size."""
        reference = np.asarray(reference, dtype=np.float32)
        candidate = np.asarray(candidate, dtype=np.float32)
        _check_output_shape(reference.shape, candidate.shape)
        finite = np.isfinite(candidate)
        cand = np.where(finite, candidate, 0.0)
        cand_pred = np.where(finite, candidate, -np.inf)[0].argmax(axis=0).astype(np.uint8)
        ref_pred = reference[0].argmax(axis=0).astype(np.uint8)
        bad = int(candidate.size - np.count_nonzero(finite))
        return self._count(name, reference, cand, bad, ref_pred, cand_pred, frame, truth)

    def add_compact(self, name: str, labels: np.ndarray, top2: np.ndarray, candidate: np.ndarray,
                    frame: np.ndarray | None = None, truth: np.ndarray | None = None) -> dict[str, Any]:
        """Compare against a compact reference (``reference.npz``): the reference argmax ``labels`` (HxW)
        and its two largest logits ``top2`` (2xHxW). Logit errors are measured on those two values:
        the candidate's logit for the reference's class and its largest logit among the other classes."""
        candidate = np.asarray(candidate, dtype=np.float32)
        _check_output_shape((1, self.num_classes, *labels.shape), candidate.shape)
        finite = np.isfinite(candidate)
        cand = np.where(finite, candidate, 0.0)[0]
        cand_pred = np.where(finite, candidate, -np.inf)[0].argmax(axis=0).astype(np.uint8)
        index = labels.astype(np.intp)[None]
        at_label = np.take_along_axis(cand, index, axis=0)[0]
        rows = 1 if self.num_classes == 1 else 2  # one class has no runner-up
        values = [at_label]
        if rows == 2:
            others = cand.copy()
            np.put_along_axis(others, index, -np.inf, axis=0)
            values.append(others.max(axis=0))
        cand_values = np.stack(values)[None]
        ref_values = np.asarray(top2, dtype=np.float32)[:rows][None]
        bad = int(candidate.size - np.count_nonzero(finite))
        return self._count(name, ref_values, cand_values, bad, labels.astype(np.uint8), cand_pred, frame, truth)

    def _count(self, name: str, reference: np.ndarray, cand: np.ndarray, bad: int, ref_pred: np.ndarray,
               cand_pred: np.ndarray, frame: np.ndarray | None, truth: np.ndarray | None) -> dict[str, Any]:
        self.nonfinite += bad
        ref: np.ndarray = reference.astype(np.float64)
        cand = cand.astype(np.float64)
        error = np.abs(cand - ref)
        image_max = float(error.max()) if error.size else 0.0
        self.max_abs_error = max(self.max_abs_error, image_max)
        self.abs_error_sum += float(error.sum())
        self.values += error.size
        dot, ref_sq, cand_sq = float((ref * cand).sum()), float((ref * ref).sum()), float((cand * cand).sum())
        self.dot, self.reference_sq, self.candidate_sq = self.dot + dot, self.reference_sq + ref_sq, \
            self.candidate_sq + cand_sq
        agree = int(np.count_nonzero(ref_pred == cand_pred))
        self.agreeing_pixels += agree
        self.pixels += ref_pred.size
        self.vs_reference = self._vs_reference() + confusion_matrix(cand_pred, ref_pred, self.num_classes)
        record: dict[str, Any] = {
            "name": name,
            "agreement": agree / ref_pred.size,
            "max_abs_error": image_max,
            "mean_abs_error": float(error.mean()) if error.size else 0.0,
            "cosine_similarity": _cosine(dot, ref_sq, cand_sq),
            "nonfinite": bad,
        }
        if truth is not None:
            self.add_truth(truth, cand_pred, ref_pred)
            valid = truth != IGNORE_INDEX
            labelled = int(np.count_nonzero(valid))
            record["pixel_accuracy_reference"] = _ratio(int(np.count_nonzero((ref_pred == truth) & valid)), labelled)
            record["pixel_accuracy_candidate"] = _ratio(int(np.count_nonzero((cand_pred == truth) & valid)), labelled)
        self.per_image.append(record)
        if frame is not None and self.keep_worst > 0:
            entry = (-record["agreement"], -len(self.per_image), _Worst(record["agreement"], name, frame,
                                                                         ref_pred, cand_pred))
            heapq.heappush(self._worst, entry)
            if len(self._worst) > self.keep_worst:
                heapq.heappop(self._worst)  # drops the best-agreeing of the kept ones
        return record

    def add_truth(self, truth: np.ndarray, candidate_pred: np.ndarray, reference_pred: np.ndarray | None) -> None:
        """Count one image against ground truth (reference_pred None: no reference on it)."""
        outside = np.unique(truth[(truth != IGNORE_INDEX) & (truth >= self.num_classes)])
        if outside.size:  # silently dropping them would score a different task
            raise InputError(f"ground truth holds labels outside the model's {self.num_classes} classes",
                             expected=f"labels 0..{self.num_classes - 1}, or {IGNORE_INDEX} for ignore",
                             found="labels " + ", ".join(str(v) for v in outside[:8]),
                             fix="map the masks to the model's train ids, or use the data the model was trained on")
        shape = (self.num_classes, self.num_classes)
        if self.truth_candidate is None:
            self.truth_candidate = np.zeros(shape, dtype=np.int64)
        self.truth_candidate += confusion_matrix(candidate_pred, truth, self.num_classes)
        if reference_pred is not None:
            if self.truth_reference is None:
                self.truth_reference = np.zeros(shape, dtype=np.int64)
            self.truth_reference += confusion_matrix(reference_pred, truth, self.num_classes)
        self.truth_images += 1

    def _vs_reference(self) -> np.ndarray:
        if self.vs_reference is None:  # set in __post_init__; None only if a caller cleared it
            raise ValueError("ParityTally.vs_reference was cleared")
        return self.vs_reference

    def worst(self) -> list[_Worst]:
        """The kept images, lowest agreement first (ties: the earlier image first)."""
        return [item for _, _, item in sorted(self._worst, key=lambda e: (-e[0], -e[1]))]

    # -- summaries -----------------------------------------------------------------------
    def agreement(self) -> float:
        return self.agreeing_pixels / self.pixels if self.pixels else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "images": len(self.per_image),
            "max_abs_error": self.max_abs_error,
            "mean_abs_error": self.abs_error_sum / self.values if self.values else 0.0,
            "cosine_similarity": _cosine(self.dot, self.reference_sq, self.candidate_sq),
            "agreement": self.agreement(),
            "miou_vs_reference": mean_iou(self._vs_reference()),
            "nonfinite_logits": self.nonfinite,
        }

    def truth_summary(self) -> dict[str, Any] | None:
        if self.truth_candidate is None:
            return None
        ref = self.truth_reference
        miou_candidate = mean_iou(self.truth_candidate)
        miou_reference = mean_iou(ref) if ref is not None else None
        return {
            "images": self.truth_images,
            "miou_candidate": miou_candidate,
            "miou_reference": miou_reference,
            "miou_drop_points": (miou_reference - miou_candidate) * 100 if miou_reference is not None else None,
            "pixel_accuracy_candidate": pixel_accuracy(self.truth_candidate),
            "pixel_accuracy_reference": pixel_accuracy(ref) if ref is not None else None,
        }

    def per_class(self, class_names: list[str]) -> list[dict[str, Any]]:
        """Rows per class. Against ground truth when there is some (IoU of both models, delta in
        points, share of labelled pixels); else the candidate's IoU against the reference's
        predictions with the class's share of the reference's pixels."""
        ref: np.ndarray | None
        if self.truth_candidate is not None:
            shares = _shares(self.truth_candidate.sum(axis=1))
            cand = iou_per_class(self.truth_candidate)
            ref = iou_per_class(self.truth_reference) if self.truth_reference is not None else None
            against = "ground_truth"
        else:
            vs_reference = self._vs_reference()
            shares = _shares(vs_reference.sum(axis=1))
            cand, ref, against = iou_per_class(vs_reference), None, "reference"
        rows = []
        for index in range(self.num_classes):
            iou_c = _finite_or_none(cand[index])
            iou_r = _finite_or_none(ref[index]) if ref is not None else None
            rows.append({
                "index": index,
                "class": class_names[index] if index < len(class_names) else f"class_{index}",
                "against": against,
                "iou_reference": iou_r,
                "iou_candidate": iou_c,
                "delta_points": (iou_c - iou_r) * 100 if iou_c is not None and iou_r is not None else None,
                "pixel_share": float(shares[index]),
            })
        return rows


def _check_output_shape(expected: tuple[int, ...], found: tuple[int, ...]) -> None:
    if tuple(expected) != tuple(found):
        raise ArtifactError(
            "the candidate's output does not match the reference's",
            expected=f"logits of shape {tuple(expected)} (classes and size of the reference)",
            found=f"{tuple(found)}",
            fix="validate a candidate exported from the same model, class count and input size",
        )


def _cosine(dot: float, a_sq: float, b_sq: float) -> float:
    if a_sq == 0.0 and b_sq == 0.0:
        return 1.0  # two all-zero outputs are the same output
    if a_sq == 0.0 or b_sq == 0.0:
        return 0.0
    return dot / math.sqrt(a_sq * b_sq)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros_like(counts, dtype=np.float64)
