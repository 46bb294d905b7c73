"""`aten.convolution_backward` written as forward convolutions, so the ONNX exporter can lower it.

Neither torch nor the dynamo ONNX exporter lowers `convolution_backward` ("No ONNX function
found"; FACTS.md). For a (non-transposed) N-d convolution y = conv(x, w) with stride s, padding p,
dilation d and groups g:

    grad_input  = conv_transpose(grad_y, w; stride s, padding p, dilation d, groups g,
                                 output_padding chosen so the result has x's spatial size)
    grad_weight = conv(x^T, grad_y^T; stride d, padding p, dilation s)^T, cut to w's kernel size
                  (batch and channel axes swapped, so the batch is summed over as the channel axis)
    grad_bias   = grad_y summed over every axis but the channel axis

Both right-hand sides are plain `aten.convolution` calls (ONNX Conv / ConvTranspose). Grouped
convolutions are split per group for the weight gradient. Transposed convolutions are not needed by
any model we export and raise NotImplementedError.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["convolution_backward"]

aten = torch.ops.aten


def _weight_grad(
    x: torch.Tensor,  # (n, c_in, *spatial)
    grad_y: torch.Tensor,  # (n, c_out, *spatial_out)
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> torch.Tensor:  # (c_out, c_in, *kernel)
    dims = len(kernel)
    full = aten.convolution(
        x.transpose(0, 1),  # (c_in, n, *spatial): the batch becomes the summed channel axis
        grad_y.transpose(0, 1),  # (c_out, n, *spatial_out) used as the weight
        None,
        list(dilation),
        list(padding),
        list(stride),
        False,
        [0] * dims,
        1,
    )  # (c_in, c_out, *k') with k' >= kernel
    for axis, k in enumerate(kernel):
        full = full.narrow(2 + axis, 0, k)
    # laid out like the weight: contiguous() keeps odd strides when c_in == 1, which later ops
    # then preserve through prims.copy_strided (no ONNX lowering); a contiguous clone does not
    out: torch.Tensor = full.transpose(0, 1).clone(memory_format=torch.contiguous_format)
    return out


def convolution_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias_sizes: Sequence[int] | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    transposed: bool,
    output_padding: Sequence[int],
    groups: int,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Same signature and results as `aten.convolution_backward` (non-transposed only)."""
    if transposed:
        raise NotImplementedError("backward of a transposed convolution is not decomposed")
    kernel = [int(k) for k in weight.shape[2:]]
    dims = len(kernel)
    grad_x = grad_w = grad_b = None
    if output_mask[0]:
        # conv_transpose's natural output size, then pad up to x's size (stride may drop rows)
        natural = [
            (int(grad_y.shape[2 + i]) - 1) * stride[i]
            - 2 * padding[i]
            + dilation[i] * (kernel[i] - 1)
            + 1
            for i in range(dims)
        ]
        extra = [int(x.shape[2 + i]) - natural[i] for i in range(dims)]
        grad_x = aten.convolution(
            grad_y, weight, None, list(stride), list(padding), list(dilation), True, extra, groups
        )  # (n, c_in, *spatial)
    if output_mask[1]:
        if groups == 1:
            grad_w = _weight_grad(x, grad_y, kernel, stride, padding, dilation)
        else:
            xs = x.chunk(groups, dim=1)  # groups x (n, c_in / g, *spatial)
            gs = grad_y.chunk(groups, dim=1)  # groups x (n, c_out / g, *spatial_out)
            grad_w = torch.cat(
                [
                    _weight_grad(xi, gi, kernel, stride, padding, dilation)
                    for xi, gi in zip(xs, gs, strict=True)
                ],
                dim=0,
            )  # (c_out, c_in / g, *kernel)
    if output_mask[2]:
        grad_b = grad_y.sum(dim=[0, *range(2, 2 + dims)])  # (c_out,)
    return grad_x, grad_w, grad_b
