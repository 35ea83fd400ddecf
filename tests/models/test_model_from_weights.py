"""One owner of "weights file -> model": ``edgeseg.models.model_from_weights``, through every path that uses it.

The checkpoint holds a zoo model built with NON-DEFAULT options (depthwise-separable DeepLabV3+ convs, output
stride 32): a path that dropped ``model_options`` would fail to load the weights (separable convs have other
keys and shapes) or compute other logits (another output stride). Every path must reproduce the source model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402

from edgeseg.errors import ModelError, UsageError  # noqa: E402
from edgeseg.manifest import Manifest  # noqa: E402
from edgeseg.models import (  # noqa: E402
    CheckpointConflict,
    CheckpointInfo,
    create_model,
    model_from_weights,
    read_checkpoint_info,
    save_checkpoint,
)
from edgeseg.spec import InputSpec, preprocess  # noqa: E402

MODEL = "shufflenetv2_x0_5_deeplabv3plus"
OPTIONS = {"separable": True, "output_stride": 32}  # both differ from the factory's defaults
CLASSES = ["floor", "wall", "sky"]
SPEC = InputSpec(64, 64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript")


def source_model() -> torch.nn.Module:
    torch.manual_seed(7)
    model = create_model(MODEL, num_classes=len(CLASSES), **OPTIONS)
    with torch.no_grad():  # trained-looking BatchNorm statistics: eval mode must use them
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("ckpt")
    model = source_model()
    path = save_checkpoint(folder / "best.pt", model, model_name=MODEL, classes=CLASSES, input_spec=SPEC,
                           model_options=OPTIONS, epoch=4)
    return path, model


def frames(count: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (SPEC.height, SPEC.width, 3), dtype=np.uint8) for _ in range(count)]


def logits(model: torch.nn.Module, frame: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(preprocess(frame, SPEC))).numpy()


def assert_same_model(loaded: torch.nn.Module, source: torch.nn.Module) -> None:
    for frame in frames():
        np.testing.assert_array_equal(logits(loaded, frame), logits(source, frame))


# -- the function itself ------------------------------------------------------------------------------
def test_the_default_options_cannot_load_these_weights(checkpoint) -> None:
    """The premise: a path that ignored the checkpoint's model_options would fail (or compute other logits)."""
    from edgeseg.models import load_weights

    path, _ = checkpoint
    with pytest.raises(ModelError, match="do not match the model's layers"):
        load_weights(create_model(MODEL, num_classes=3), path)


def test_checkpoint_info_says_what_the_file_holds(checkpoint) -> None:
    path, source = checkpoint
    model, info = model_from_weights(path)
    assert isinstance(info, CheckpointInfo) and info.full_checkpoint and info.kind == "edgeseg-checkpoint"
    assert (info.model, info.num_classes, info.classes) == (MODEL, 3, CLASSES)
    assert info.input_spec == SPEC and info.model_options == OPTIONS and info.path == path
    assert info.num_tensors == len(source.state_dict()) and info.extra["epoch"] == 4
    assert not model.training
    assert_same_model(model, source)
    assert read_checkpoint_info(path) == info  # the same answer without building the model
    data = info.checkpoint_dict()
    assert data["model_options"] == OPTIONS and data["epoch"] == 4 and "state_dict" not in data


def test_overrides_go_over_the_recorded_options(checkpoint) -> None:
    path, _ = checkpoint
    info = read_checkpoint_info(path, output_stride=16)
    assert info.model_options == {"separable": True, "output_stride": 16}
    model, _ = model_from_weights(path, output_stride=16)  # the same weights, another output stride
    assert model.backbone.output_stride == 16


def test_agreeing_options_are_fine_contradicting_ones_are_explained(checkpoint) -> None:
    path, _ = checkpoint
    model_from_weights(path, model=MODEL, num_classes=3)
    with pytest.raises(CheckpointConflict) as info:
        read_checkpoint_info(path, model="hrnet_w18_small_v1", num_classes=5)
    error = info.value
    assert isinstance(error, UsageError) and isinstance(error, ModelError) and error.exit_code == 2
    assert "another model and another number of classes" in error.problem
    assert f"--model hrnet_w18_small_v1 (checkpoint: {MODEL})" in error.found
    assert "--num-classes 5 (checkpoint: 3)" in error.found
    assert error.fix.startswith("drop --model and --num-classes")
    with pytest.raises(CheckpointConflict, match="manifest") as named:
        read_checkpoint_info(path, num_classes=4, origin="the build folder's manifest.json")
    assert "num_classes 4 in the build folder's manifest.json (checkpoint: 3)" in named.value.found


def test_plain_state_dicts_need_the_model_and_its_options(checkpoint, tmp_path: Path) -> None:
    path, source = checkpoint
    plain = tmp_path / "plain.pt"
    torch.save(source.state_dict(), plain)
    with pytest.raises(UsageError, match="not the name of their model") as info:
        model_from_weights(plain)
    assert "pass --model NAME" in info.value.fix
    with pytest.raises(ModelError, match="pass --num-classes 3"):  # 19 by default: the file says otherwise
        model_from_weights(plain, model=MODEL, **OPTIONS)
    model, loaded = model_from_weights(plain, model=MODEL, num_classes=3, **OPTIONS)
    assert not loaded.full_checkpoint and loaded.kind == "state-dict" and loaded.input_spec is None
    assert loaded.model_options == OPTIONS and loaded.classes == []
    assert_same_model(model, source)
    assert read_checkpoint_info(plain, model=MODEL, default_num_classes=3).num_classes == 3
    assert read_checkpoint_info(plain, model=MODEL, num_classes=5, default_num_classes=3).num_classes == 5
    with pytest.raises(ModelError, match="not an edgeseg checkpoint") as refused:
        read_checkpoint_info(plain, model=MODEL, require_checkpoint="pass RUN/best.pt")
    assert refused.value.fix == "pass RUN/best.pt"
    with pytest.raises(ModelError, match="unknown model"):
        read_checkpoint_info(plain, model="shufflenetv2_x0_5_deeplab")


# -- every path that turns weights into a model ------------------------------------------------------
def test_build_export_step(checkpoint, tmp_path: Path) -> None:
    from edgeseg.pipeline.build import BuildOptions
    from edgeseg.pipeline.build_steps import ExportRecord, _export, model_info

    path, _ = checkpoint
    options = BuildOptions(weights=path, out=tmp_path)
    info = model_info(options)
    assert info.model == MODEL and info.model_options == OPTIONS and info.spec == SPEC
    with pytest.raises(UsageError, match="contradict"):
        model_info(BuildOptions(model="hrnet_w18_small_v1", weights=path, out=tmp_path))
    result = _export(options, info, [], [], "synthetic", tmp_path, lambda _: None)
    assert result.model == MODEL and result.input_spec == SPEC and (tmp_path / "model.onnx").is_file()
    assert ExportRecord.from_dict(json.loads(json.dumps(result.to_dict()))) == result  # steps.json's summary
    assert_reference_is_the_source(tmp_path, checkpoint[1])


def assert_reference_is_the_source(folder: Path, source: torch.nn.Module) -> None:
    """reference.npz holds the exported model's argmax: it must be the source model's."""
    from edgeseg.reference import load_reference

    reference = load_reference(folder / "reference.npz")
    for i in range(reference.num_samples):
        with torch.inference_mode():
            expected = source(torch.from_numpy(reference.inputs(i))).argmax(1)[0].numpy()
        np.testing.assert_array_equal(reference.labels[i], expected)


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`edgeseg export --weights best.pt` (the CLI) of the checkpoint."""
    from edgeseg.cli import main

    path, source = checkpoint
    out = tmp_path_factory.mktemp("export")
    result = CliRunner().invoke(main, ["export", "--weights", str(path), "--out", str(out), "--num-samples", "2"])
    assert result.exit_code == 0, result.output
    assert "edgeseg-checkpoint" in result.stderr
    assert_reference_is_the_source(out, source)
    return out


def test_commands_export(exported: Path, checkpoint, tmp_path: Path) -> None:
    import onnx

    from edgeseg.cli import main
    from edgeseg.export.onnx_export import read_onnx_metadata

    meta = read_onnx_metadata(onnx.load(str(exported / "model.onnx")))
    assert meta["model"] == MODEL and meta["classes"] == CLASSES
    wrong = CliRunner().invoke(main, ["export", "--weights", str(checkpoint[0]), "--num-classes", "5",
                                      "--out", str(tmp_path / "out")])
    assert wrong.exit_code == 2 and "--num-classes 5 (checkpoint: 3)" in wrong.stderr
    assert not (tmp_path / "out").exists()


def test_validate_torch_reference(exported: Path, checkpoint) -> None:
    from edgeseg.pipeline.validate import TorchReference, validate_candidate

    result = validate_candidate(exported / "model.onnx", TorchReference(checkpoint[0]), write=False)
    assert result.reference_kind == "pytorch" and result.passed, result.gates
    assert result.parity["agreement"] > 0.999 and result.classes == CLASSES
    with pytest.raises(UsageError, match="contradict"):
        validate_candidate(exported / "model.onnx", TorchReference(checkpoint[0], "hrnet_w18_small_v1"),
                           write=False)


def test_bench_pytorch_runner(exported: Path, checkpoint) -> None:
    from edgeseg.pipeline.bench import plan_bench

    plan = plan_bench(onnx_files=[exported / "model.onnx"], weights=checkpoint[0], threads=1)
    eager = plan.runners[0]
    assert eager.name == "pytorch-fp32" and eager.input_shape == SPEC.shape
    x = plan.inputs[0]
    with torch.inference_mode():
        expected = checkpoint[1](torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(eager.infer(x), expected)
    eager.close()
    for runner in plan.runners[1:]:
        runner.close()


def test_segmenter_torch_backend(checkpoint, tmp_path: Path, write_build_manifest) -> None:
    from edgeseg.runtime import Segmenter
    from edgeseg.runtime.torch_backend import TorchBackend

    path, source = checkpoint
    write_build_manifest(tmp_path, Manifest(model=MODEL, num_classes=3, input_spec=SPEC))
    seg = Segmenter.from_artifacts(tmp_path, backend="torch", weights=path, device="cpu")
    for frame in frames():
        np.testing.assert_array_equal(seg(frame), logits(source, frame)[0].argmax(0).astype(np.uint8))
    backend = TorchBackend.from_checkpoint(path, MODEL, 3, SPEC.shape)
    x = preprocess(frames(1)[0], SPEC)
    np.testing.assert_array_equal(backend.infer(x), logits(source, frames(1)[0]))
    with pytest.raises(CheckpointConflict, match="manifest"):
        TorchBackend.from_checkpoint(path, MODEL, 4, SPEC.shape)


def test_train_resume_and_eval_keep_the_options(tmp_path: Path) -> None:
    from edgeseg.data.generate import SynthConfig, write_synthetic_dataset
    from edgeseg.models.checkpoint import load_checkpoint
    from edgeseg.training.evaluation import model_from_checkpoint
    from edgeseg.training.trainer import TrainConfig, train

    write_synthetic_dataset(SynthConfig(out=tmp_path / "data" / "train", num=4, height=64, width=64, seed=0))
    write_synthetic_dataset(SynthConfig(out=tmp_path / "data" / "val", num=2, height=64, width=64, seed=1))
    config = dict(model=MODEL, data=tmp_path / "data", out=tmp_path / "run", input_size=(64, 64), batch_size=2,
                  workers=0, threads=1, warmup_steps=1, max_steps_per_epoch=1)
    first = train(TrainConfig(**config, epochs=1, model_options=dict(OPTIONS)), log=lambda _: None)
    assert load_checkpoint(first.last_path)["model_options"] == OPTIONS
    # --resume without repeating the options: the checkpoint's build the model, and the next checkpoints keep them
    lines: list[str] = []
    train(TrainConfig(**config, epochs=2, resume=first.last_path), log=lines.append)
    assert any("resumed" in line for line in lines)
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert saved["epoch"] == 1 and saved["model_options"] == OPTIONS
    model, data = model_from_checkpoint(tmp_path / "run" / "last.pt")
    assert data["model_options"] == OPTIONS and data["classes"] == saved["classes"]
    reloaded = create_model(MODEL, num_classes=len(saved["classes"]), **OPTIONS)
    reloaded.load_state_dict(saved["state_dict"])
    x = torch.from_numpy(preprocess(frames(1)[0], SPEC))
    with torch.inference_mode():
        assert torch.equal(model(x), reloaded.eval()(x))
