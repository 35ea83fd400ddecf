"""``edgeseg models``: the registered models with their size and compute (torch imported lazily)."""

from __future__ import annotations

from typing import Any

import click

from ._common import SIZE


def count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: Any, height: int, width: int) -> int:
    """Multiply-accumulates of Conv/ConvTranspose/Linear for one HxW image (bias adds not counted).

    The model runs on the meta device (shapes only, no arithmetic), so even 1024x2048
    costs nothing; it falls back to a real CPU forward if an op has no meta kernel.
    """
    import torch
    from torch import nn

    total = 0

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal total
        if isinstance(module, nn.ConvTranspose2d):
            per_input = module.out_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += inputs[0].numel() * per_input
        elif isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        model.eval()
        for device in ("meta", "cpu"):
            total = 0
            try:
                with torch.no_grad():
                    model.to(device)(torch.zeros(1, 3, height, width, device=device))
                return total
            except NotImplementedError:  # an op without a meta kernel: measure on CPU instead
                continue
        raise RuntimeError("unreachable")  # pragma: no cover
    finally:
        for handle in handles:
            handle.remove()


@click.command("models")
@click.option("--input-size", type=SIZE, default="512x1024", show_default=True,
              help="HxW at which compute (GMACs) is counted.")
@click.option("--pattern", default=None, metavar="GLOB", help="Only names matching this shell pattern.")
@click.option("--num-classes", type=click.IntRange(1, 255), default=19, show_default=True)
def models_cmd(input_size: tuple[int, int], pattern: str | None, num_classes: int) -> None:
    """List the registered models: family, decoder, parameters and compute."""
    from ..errors import UsageError
    from ..models import create_model, list_models, model_info
    from ._common import progress

    names = list_models(pattern)
    if not names:
        raise UsageError(f"no model matches {pattern!r}", found=", ".join(list_models()),
                         fix="run `edgeseg models` without --pattern for the full list")
    height, width = input_size
    rows = []
    for name in progress(names, label=f"counting parameters and GMACs of {len(names)} model(s)"):
        info = model_info(name)
        model = create_model(name, num_classes=num_classes)
        params = count_parameters(model)
        macs = count_macs(model, height, width)
        rows.append((name, info.family, info.decoder, f"{params / 1e6:.2f}", f"{macs / 1e9:.2f}"))
    header = ("name", "family", "decoder", "params (M)", f"GMACs @{height}x{width}")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    align = ["<", "<", "<", ">", ">"]
    for row in [header, *rows]:
        click.echo("  ".join(f"{str(v):{a}{w}}" for v, a, w in zip(row, align, widths)))
    click.echo(f"\nparams for {num_classes} classes. GMACs = 10^9 multiply-accumulates of Conv/ConvTranspose/Linear "
               "layers for one image (batch 1); GFLOPs ~ 2 x GMACs. The HRNet paper's 'GFLOPs' count MACs.")
