"""The PyTorch reference backend (layer 1, but torch is imported only when it is used).

For a GPU without TensorRT, as validate's PyTorch reference and as bench's PyTorch eager runner
(the one torch runner: numpy in, numpy logits out): the model comes from a weights file
(``edgeseg.models.model_from_weights``) or as an ``nn.Module``. On CUDA
it reads the Segmenter's device input buffer and writes logits into its output buffer
through ``__cuda_array_interface__`` (no host round trip); ``infer`` is the host path.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError, require


class TorchBackend:
    name = "torch"

    def __init__(self, model: Any, input_shape: tuple[int, ...], *, device: str = "cpu",
                 input_name: str = "images", output_name: str = "logits") -> None:
        self.torch = require("torch", purpose="the torch reference backend")
        if device.startswith("cuda") and not self.torch.cuda.is_available():
            raise ConfigError("the torch backend was asked to run on CUDA, but torch sees no GPU",
                              found=f"device={device!r}", fix="pass device='cpu'")
        self.device = self.torch.device(device)
        self.model = model.to(self.device).eval()
        self.input_name, self.output_name = input_name, output_name
        self.input_shape = tuple(int(d) for d in input_shape)
        with self.torch.inference_mode():
            probe = self.model(self.torch.zeros(self.input_shape, device=self.device))
        self.output_shape: tuple[int, ...] = tuple(int(d) for d in probe.shape)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], model_name: str, num_classes: int,
                        input_shape: tuple[int, ...], *, device: str = "cpu", **options: Any) -> TorchBackend:
        """The model of a build folder from its weights: ``model_name`` / ``num_classes`` are the manifest's.

        ``edgeseg.models.model_from_weights`` builds it (the checkpoint's model options, e.g. a width, then
        ``options`` over them); a checkpoint of another model or class count is refused.
        """
        checkpoint = require("edgeseg.models.checkpoint", purpose="loading the checkpoint")  # layer 3, lazily
        model, _ = checkpoint.model_from_weights(path, model=model_name, num_classes=num_classes,
                                                 origin="the build folder's manifest.json", **options)
        return cls(model, input_shape, device=device)

    def infer(self, x: np.ndarray) -> np.ndarray:
        array = np.asarray(x, dtype=np.float32)
        if array.shape != self.input_shape:
            raise InputError("input tensor has the wrong shape", expected=str(self.input_shape),
                             found=str(array.shape))
        torch = self.torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(array)).to(self.device))
        return np.ascontiguousarray(out.float().cpu().numpy())

    def run_device(self, input_buffer: Any, output_buffer: Any, stream: Any = None) -> None:
        """Device path: logits of the buffer behind ``input_buffer`` written into ``output_buffer``.

        Both expose ``__cuda_array_interface__``; torch wraps them without copying. The
        work is ordered after ``stream``'s earlier work (preprocessing) by waiting on it.
        """
        torch = self.torch
        x = torch.as_tensor(input_buffer, device=self.device)
        y = torch.as_tensor(output_buffer, device=self.device)
        external = torch.cuda.ExternalStream(int(stream.handle)) if stream is not None else None
        with torch.inference_mode(), torch.cuda.stream(external) if external is not None else nullcontext():
            y.copy_(self.model(x.float()).to(y.dtype))

    def close(self) -> None:
        self.model = None

