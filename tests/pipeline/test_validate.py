"""edgeseg.pipeline.validate / edgeseg.parity: metrics with known answers, gates, overlays, both reference kinds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.blocked_imports import run_without
from helpers.tiny_models import conv_net, export_onnx
from helpers.tiny_onnx import class_names

from edgeseg.errors import AccuracyError, ArtifactError, InputError
from edgeseg.images import load_image, save_png
from edgeseg.palette import DISAGREEMENT_COLOUR
from edgeseg.parity import ParityTally
from edgeseg.pipeline.validate import OVERLAY_DIR, TorchReference, ValidationConfig, agree_on_spec, validate_candidate
from edgeseg.reference import Reference, preprocess_frames, save_reference, synthetic_frames
from edgeseg.spec import InputSpec, resize_mask_nearest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

SPEC = InputSpec(32, 64)
TINY = "_validate_tiny_test_model"


def tiny_net(num_classes: int = 3) -> torch.nn.Module:
    """One Conv 3x3: what the registered TINY builds, so its weights load into the candidate's model."""
    return conv_net(num_classes, hidden=None)


def export_tiny(folder: Path, *, num_classes: int = 3, spec: InputSpec = SPEC,
                metadata: bool = True) -> tuple[torch.nn.Module, Path]:
    model = tiny_net(num_classes)
    return model, export_onnx(model, folder / "model.onnx", spec, metadata=metadata, name=TINY)


def save_tiny_reference(folder: Path, model: torch.nn.Module, *, spec: InputSpec = SPEC, count: int = 3,
                        logits_shift=None, meta_spec: InputSpec | None = None,
                        masks: np.ndarray | None = None) -> Path:
    frames = synthetic_frames(count, spec.height, spec.width, seed=1)
    inputs = preprocess_frames(frames, spec)
    with torch.no_grad():
        logits = model(torch.from_numpy(inputs)).numpy()
    if logits_shift is not None:
        logits = logits_shift(logits)
    meta = {"model": TINY, "num_classes": logits.shape[1], "input_spec": (meta_spec or spec).to_dict()}
    return save_reference(folder / "reference.npz", Reference.from_logits(frames, logits, meta, masks))


# -- ParityTally: answers known in advance --------------------------------------------------------------
def one_hot_logits(labels: np.ndarray, num_classes: int) -> np.ndarray:
    logits = np.zeros((1, num_classes, *labels.shape), dtype=np.float32)
    for c in range(num_classes):
        logits[0, c][labels == c] = 5.0
    return logits


def test_identical_logits_agree_fully() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 4, 16, 24)).astype(np.float32)
    tally = ParityTally(4)
    tally.add("a", logits, logits.copy())
    summary = tally.summary()
    assert summary["agreement"] == 1.0
    assert summary["max_abs_error"] == 0.0 and summary["mean_abs_error"] == 0.0
    assert summary["cosine_similarity"] == pytest.approx(1.0, abs=1e-12)
    assert summary["miou_vs_reference"] == 1.0


def test_flipped_pixels_give_that_agreement_and_per_class_rows() -> None:
    labels = np.zeros((10, 10), dtype=np.uint8)
    labels[:, 5:] = 1  # 50 pixels of class 0, 50 of class 1
    flipped = labels.copy()
    flipped[0, :7] = 1 - flipped[0, :7]  # 7 pixels change: 5 of class 0 -> 1, 2 of class 1 -> 0
    tally = ParityTally(2)
    record = tally.add("img", one_hot_logits(labels, 2), one_hot_logits(flipped, 2))
    assert record["agreement"] == pytest.approx(93 / 100)
    assert tally.summary()["agreement"] == pytest.approx(0.93)
    assert record["max_abs_error"] == pytest.approx(5.0)
    rows = tally.per_class(["road", "car"])
    # class 0: tp 45, reference 50, candidate 47 -> IoU 45 / 52; class 1: tp 48, ref 50, cand 53 -> 48 / 55
    assert rows[0]["class"] == "road" and rows[0]["iou_candidate"] == pytest.approx(45 / 52)
    assert rows[1]["iou_candidate"] == pytest.approx(48 / 55)
    assert rows[0]["pixel_share"] == pytest.approx(0.5) and rows[0]["against"] == "reference"
    assert rows[0]["iou_reference"] is None and rows[0]["delta_points"] is None


def test_ground_truth_drop_and_per_class_delta() -> None:
    truth = np.zeros((4, 5), dtype=np.uint8)
    truth[:, 3:] = 1  # 12 pixels class 0, 8 pixels class 1
    truth[0, 0] = 255  # ignored
    candidate = truth.copy()
    candidate[candidate == 255] = 0
    candidate[3, :2] = 1  # two class-0 pixels predicted as class 1
    reference = np.where(truth == 255, 0, truth).astype(np.uint8)
    tally = ParityTally(2)
    tally.add("x", one_hot_logits(reference, 2), one_hot_logits(candidate, 2), truth=truth)
    gt = tally.truth_summary()
    # reference perfect -> mIoU 1; candidate: class 0 IoU 9/11, class 1 IoU 8/10
    expected_candidate = (9 / 11 + 8 / 10) / 2
    assert gt["miou_reference"] == pytest.approx(1.0)
    assert gt["miou_candidate"] == pytest.approx(expected_candidate)
    assert gt["miou_drop_points"] == pytest.approx((1 - expected_candidate) * 100)
    rows = tally.per_class(["a", "b"])
    assert rows[0]["against"] == "ground_truth"
    assert rows[0]["delta_points"] == pytest.approx((9 / 11 - 1) * 100)
    assert rows[0]["pixel_share"] == pytest.approx(11 / 19) and rows[1]["pixel_share"] == pytest.approx(8 / 19)


def test_nan_logits_are_counted_and_worst_images_kept_lowest_first() -> None:
    labels = np.zeros((4, 4), dtype=np.uint8)
    tally = ParityTally(2, keep_worst=2)
    frame = np.zeros((4, 4, 3), dtype=np.uint8)
    for name, flips in (("good", 0), ("bad", 8), ("mid", 3)):
        cand = labels.copy()
        cand.reshape(-1)[:flips] = 1
        tally.add(name, one_hot_logits(labels, 2), one_hot_logits(cand, 2), frame)
    assert [w.name for w in tally.worst()] == ["bad", "mid"]
    nan = one_hot_logits(labels, 2)
    nan[0, 0, 0, 0] = np.nan
    tally.add("nan", one_hot_logits(labels, 2), nan)
    assert tally.summary()["nonfinite_logits"] == 1


def test_resize_nearest_keeps_labels() -> None:
    mask = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    big = resize_mask_nearest(mask, 4, 6)
    assert big.shape == (4, 6) and set(np.unique(big)) == {0, 1, 2, 255}
    assert (big[:2, :3] == 0).all() and (big[2:, 3:] == 255).all()


def test_specs_must_agree() -> None:
    other = InputSpec(32, 64, mean=(0.5, 0.5, 0.5))
    assert agree_on_spec([(SPEC, "a"), (None, "b"), (SPEC, "c")]) == SPEC
    with pytest.raises(ArtifactError, match="different input specs") as info:
        agree_on_spec([(SPEC, "model.onnx metadata"), (other, "reference meta")])
    assert "mean" in str(info.value)
    with pytest.raises(ArtifactError, match="no input spec"):
        agree_on_spec([(None, "a")])


# -- validate_candidate end to end on a real ONNX ---------------------------------------------------------
def test_validate_against_reference_npz_writes_json_and_overlays(tmp_path: Path) -> None:
    model, onnx_path = export_tiny(tmp_path / "build")
    ref = save_tiny_reference(tmp_path / "build", model)
    result = validate_candidate(onnx_path, ref, config=ValidationConfig(worst_k=2))
    assert result.passed and result.parity["agreement"] == 1.0
    # the reference keeps float16 logits: errors at float16 resolution, not float32
    assert result.parity["max_abs_error"] < 5e-3 and result.parity["cosine_similarity"] > 0.99999
    assert result.classes == class_names(3) and result.ground_truth is None
    saved = json.loads((tmp_path / "build" / "validation.json").read_text())
    assert saved["parity"]["images"] == 3 and len(saved["per_image"]) == 3
    overlays = sorted((tmp_path / "build" / OVERLAY_DIR).glob("worst_*.png"))
    assert len(overlays) == 2
    picture = load_image(overlays[0])
    assert picture.shape == (SPEC.height, 3 * SPEC.width + 8, 3)


def test_gate_failure_raises_after_writing(tmp_path: Path) -> None:
    model, onnx_path = export_tiny(tmp_path / "b")

    def scramble(logits: np.ndarray) -> np.ndarray:
        out = logits.copy()
        out[:, :, :16] = out[:, ::-1, :16]  # reverse the class order in the top half: argmax changes there
        return out

    ref = save_tiny_reference(tmp_path / "b", model, logits_shift=scramble)
    with pytest.raises(AccuracyError, match="failed the accuracy gates") as info:
        validate_candidate(onnx_path, ref, out_dir=tmp_path / "out")
    assert "--min-agreement 0.99" in str(info.value)
    # a float candidate: no calibration advice, which could not change it
    assert "exported from these weights" in str(info.value) and "percentile" not in str(info.value)
    saved = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert saved["gates"]["passed"] is False and saved["parity"]["agreement"] < 0.99
    overlay = load_image(sorted((tmp_path / "out" / OVERLAY_DIR).glob("*.png"))[0])
    marked = np.all(overlay[:, : SPEC.width] == DISAGREEMENT_COLOUR, axis=-1)
    assert marked.any()  # disagreements are highlighted
    # the same candidate passes a gate it meets
    result = validate_candidate(onnx_path, ref, out_dir=tmp_path / "out",
                                config=ValidationConfig(min_agreement=0.0))
    assert result.passed


def test_reference_with_other_spec_is_refused(tmp_path: Path) -> None:
    model, onnx_path = export_tiny(tmp_path)
    ref = save_tiny_reference(tmp_path, model, meta_spec=InputSpec(32, 64, channel_order="BGR"))
    with pytest.raises(ArtifactError, match="different input specs"):
        validate_candidate(onnx_path, ref, write=False)


def make_data(folder: Path, count: int = 2, *, masks: bool = True, size: tuple[int, int] = (40, 70)) -> Path:
    rng = np.random.default_rng(3)
    frames = synthetic_frames(count, *size, seed=5)
    for i, frame in enumerate(frames):
        save_png(folder / "images" / f"img{i}.png", frame)
        if masks:
            mask = rng.integers(0, 3, size=size).astype(np.uint8)
            mask[0, :5] = 255
            save_png(folder / "masks" / f"img{i}.png", mask)
    return folder


@pytest.fixture
def tiny_registered(monkeypatch: pytest.MonkeyPatch):
    from edgeseg.models import registry

    info = registry.ModelInfo(TINY, "test", "none", tiny_net)
    monkeypatch.setitem(registry._REGISTRY, TINY, info)
    return info


def test_pytorch_reference_on_data_with_ground_truth(tmp_path: Path, tiny_registered) -> None:
    model, onnx_path = export_tiny(tmp_path / "build")
    weights = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), weights)
    data = make_data(tmp_path / "data")
    result = validate_candidate(onnx_path, TorchReference(weights, TINY), data_dir=data, write=False)
    assert result.reference_kind == "pytorch" and result.parity["images"] == 2
    assert result.parity["agreement"] == 1.0
    gt = result.ground_truth
    assert gt["images"] == 2 and gt["miou_reference"] == pytest.approx(gt["miou_candidate"])
    assert abs(gt["miou_drop_points"]) < 1e-9
    assert result.per_class[0]["against"] == "ground_truth" and result.per_class[0]["iou_reference"] is not None
    assert "--max-miou-drop" not in " ".join(result.gates["skipped"])


def test_reference_npz_with_data_scores_candidate_only(tmp_path: Path) -> None:
    model, onnx_path = export_tiny(tmp_path / "build")
    ref = save_tiny_reference(tmp_path / "build", model)
    result = validate_candidate(onnx_path, ref, data_dir=make_data(tmp_path / "data"), write=False)
    assert result.ground_truth["miou_reference"] is None and result.ground_truth["miou_candidate"] > 0
    assert any("no PyTorch reference on these images" in n for n in result.notes)
    assert any("--max-miou-drop" in s for s in result.gates["skipped"])


def test_ground_truth_travels_in_the_reference(tmp_path: Path) -> None:
    """Masks stored in reference.npz give the robot the build's mIoU gate, without the data set."""
    model, onnx_path = export_tiny(tmp_path / "build")
    masks = np.random.default_rng(1).integers(0, 3, (3, SPEC.height, SPEC.width)).astype(np.uint8)
    ref = save_tiny_reference(tmp_path / "build", model, masks=masks)
    result = validate_candidate(onnx_path, ref, write=False)
    gt = result.ground_truth
    assert gt["images"] == 3 and gt["miou_reference"] == pytest.approx(gt["miou_candidate"], abs=1e-9)
    assert not any("--max-miou-drop" in s for s in result.gates["skipped"])


def test_compact_reference_counts_like_full_logits() -> None:
    """add_compact (argmax + top-2 logits) gives the full-logit agreement and IoU."""
    rng = np.random.default_rng(4)
    reference = rng.normal(size=(1, 5, 16, 24)).astype(np.float32)
    candidate = reference + rng.normal(scale=0.6, size=reference.shape).astype(np.float32)
    full, compact = ParityTally(5), ParityTally(5)
    full.add("x", reference, candidate)
    part = np.sort(reference, axis=1)
    top2 = np.stack([part[:, -1], part[:, -2]], axis=1)[0].astype(np.float16)
    compact.add_compact("x", reference.argmax(axis=1)[0].astype(np.uint8), top2, candidate)
    a, b = full.summary(), compact.summary()
    assert 0.3 < a["agreement"] < 1.0 and b["agreement"] == a["agreement"]
    assert b["miou_vs_reference"] == pytest.approx(a["miou_vs_reference"])


def test_missing_masks_are_named(tmp_path: Path) -> None:
    model, onnx_path = export_tiny(tmp_path / "build")
    ref = save_tiny_reference(tmp_path / "build", model)
    data = make_data(tmp_path / "data", count=3)
    (data / "masks" / "img1.png").unlink()
    with pytest.raises(InputError, match="1 of 3 images") as info:
        validate_candidate(onnx_path, ref, data_dir=data, write=False)
    assert "img1.png" in str(info.value)


def test_data_splits_and_classes_come_from_the_folder_dataset_parser(tmp_path: Path) -> None:
    """--data is read by edgeseg.data.folder: val.txt and DIR/val/ splits, classes.json checked and named."""
    from edgeseg.errors import ConfigError

    model, onnx_path = export_tiny(tmp_path / "build", metadata=False)  # no class names in the candidate
    ref = save_tiny_reference(tmp_path / "build", model)
    data = make_data(tmp_path / "data", count=3)
    (data / "val.txt").write_text("img2\nimg0\n")
    names = [{"name": n, "color": [i, i, i]} for i, n in enumerate(["floor", "wall", "sky"])]
    (data / "classes.json").write_text(json.dumps({"classes": names}))
    result = validate_candidate(onnx_path, ref, data_dir=data, write=False)
    assert result.ground_truth["images"] == 2  # the val split only, not every image of data/images
    assert result.classes == ["floor", "wall", "sky"]

    split = make_data(tmp_path / "split" / "val", count=1)
    make_data(tmp_path / "split", count=3)  # DIR/images too: the val split wins
    result = validate_candidate(onnx_path, ref, data_dir=split.parent, write=False)
    assert result.ground_truth["images"] == 1

    (data / "classes.json").write_text(json.dumps({"classes": names[:2]}))
    with pytest.raises(ConfigError, match="disagrees with classes.json"):
        validate_candidate(onnx_path, ref, data_dir=data, write=False)


def test_the_files_scored_are_listed_without_reading_them(tmp_path: Path) -> None:
    """``Samples.files`` keys the build's cached validation: the split that is scored, images and masks."""
    from edgeseg.pipeline.validation_data import data_samples

    split = make_data(tmp_path / "split" / "val", count=2)
    make_data(tmp_path / "split", count=3)  # DIR/images too: DIR/val is what is scored, so what is keyed
    samples = data_samples(tmp_path / "split", None, 3)
    assert sorted(samples.files) == sorted([*(split / "images").iterdir(), *(split / "masks").iterdir()])
    plain = make_data(tmp_path / "plain", count=2, masks=False)
    (plain / "images" / "img0.png").write_bytes(b"not an image")  # listed, not read: no error yet
    assert sorted(data_samples(plain, None, 3).files) == sorted((plain / "images").iterdir())


def test_images_without_masks_are_validated_without_ground_truth(tmp_path: Path, tiny_registered) -> None:
    model, onnx_path = export_tiny(tmp_path / "build")
    weights = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), weights)
    data = make_data(tmp_path / "data", count=2, masks=False)
    result = validate_candidate(onnx_path, TorchReference(weights, TINY), data_dir=data, write=False)
    assert result.parity["images"] == 2 and result.parity["agreement"] == 1.0
    assert not result.ground_truth or not result.ground_truth.get("images")
    plain = validate_candidate(onnx_path, TorchReference(weights, TINY), data_dir=data / "images", write=False,
                               config=ValidationConfig(max_images=1))
    assert plain.parity["images"] == 1
    ref = save_tiny_reference(tmp_path / "build", model)
    result = validate_candidate(onnx_path, ref, data_dir=data, write=False)
    assert any("has no masks" in note for note in result.notes)


def test_validate_with_reference_npz_needs_no_torch(tmp_path: Path) -> None:
    model, onnx_path = export_tiny(tmp_path / "build")
    ref = save_tiny_reference(tmp_path / "build", model)
    code = f"""
        from edgeseg.pipeline.validate import validate_candidate
        result = validate_candidate({str(onnx_path)!r}, {str(ref)!r})
        assert result.passed and result.parity["agreement"] == 1.0, result.parity
        assert "torch" not in sys.modules
        print("ok")
    """
    done = run_without(code, {"torch"})
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr
    assert (tmp_path / "build" / "validation.json").is_file()
