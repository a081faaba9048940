"""Probes: what each block of a residual or plain net does, as tidy tables.

* :func:`layer_responses`: the standard deviation of each residual function's
  output ``F(x)``, after its last BN and before the addition (He et al. 2015,
  Sec. 4.2, Fig. 7: residual functions are "generally closer to zero than the
  non-residual functions", and smaller in deeper nets);
* :func:`gradient_norms`: per-block norms of the loss gradient with respect to
  the block's input and to the block's parameters -- the backward signal that
  identity paths carry to the early blocks;
* :func:`block_contributions`: ``||F(x)|| / ||shortcut(x)||`` per block, the
  shared per-stage vocabulary of :func:`residuals.core.contribution_table`.

Every function returns a :class:`pandas.DataFrame` with one row per block,
keyed by ``block`` (0-based, in forward order) and ``stage`` (the network
stage, 1-based), and leaves the model as it found it: same train/eval mode,
same BN running statistics, no ``.grad`` written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from residuals.core import contribution_table
from residuals.nets.models import ResNet

__all__ = ["block_contributions", "gradient_norms", "layer_responses"]


def _check_model(model: Any) -> ResNet:
    model = getattr(model, "_orig_mod", model)  # a torch.compile'd model: probe the original
    if not isinstance(model, ResNet):
        raise TypeError(
            f"probes need a residuals.nets.ResNet (with .blocks and .block_stage), "
            f"got {type(model).__name__}"
        )
    return model


@contextmanager
def _mode(model: torch.nn.Module, train: bool) -> Iterator[None]:
    """Put ``model`` in train/eval mode, and restore its mode and buffers afterwards."""
    was_training = model.training
    buffers = [(b, b.detach().clone()) for b in model.buffers()] if train else []
    model.train(train)
    try:
        yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        model.train(was_training)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batches(x: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """Tensor -> chunks of ``batch_size``; iterable of tensors or ``(x, y, ...)`` -> their x."""
    if torch.is_tensor(x):
        yield from torch.split(x, batch_size)
        return
    for item in x:
        yield item[0] if isinstance(item, (tuple, list)) else item


def _response_layers(model: ResNet, layers: str) -> list[tuple[int, torch.nn.Module]]:
    """(block index, module whose output is a response), in forward order."""
    if layers == "branch":
        return [(i, b.branch) for i, b in enumerate(model.blocks)]
    if layers == "all":
        # Post-activation: every BN output (before its ReLU or the addition); pre-activation:
        # every conv output (the branch's layers end in convs there).
        kind = torch.nn.Conv2d if model.config.preact else torch.nn.BatchNorm2d
        return [(i, m) for i, b in enumerate(model.blocks) for m in b.branch if isinstance(m, kind)]
    raise ValueError(
        f"layers must be 'branch' (each block's F(x)) or 'all' (every layer of "
        f"every residual function), got {layers!r}"
    )


def layer_responses(
    model: ResNet, x: torch.Tensor | Iterable, *, batch_size: int = 256, layers: str = "branch"
) -> pd.DataFrame:
    """Standard deviation of the residual functions' responses (He et al. 2015, Fig. 7).

    With ``layers="branch"`` (default) the response of block ``l`` is
    ``F_l(x_l)``, the output of ``block.branch``: after the branch's last BN
    and before the addition and the final ReLU (post-activation blocks), or
    after its last conv (pre-activation blocks). For a plain block it is the
    same tensor, the layer's output before ReLU. With ``layers="all"`` every
    layer of every branch gives a row, as on the paper's x-axis ("the outputs
    of each 3x3 layer, after BN and before other nonlinearity"): every BN
    output of a post-activation branch, every conv output of a pre-activation
    one (the stem is not included).

    The std is over every element (samples, channels, positions) of all
    batches, accumulated in float64 on the model's device, so a test set can
    be fed in batches with no host synchronisation until the end.

    Runs in eval mode (running BN statistics, as the paper measures trained
    nets on the test set) under ``torch.no_grad``; the model's mode is restored.

    Parameters
    ----------
    model : ResNet
    x : tensor of shape (N, C, H, W), or an iterable of such tensors or of
        ``(x, y)`` batches (e.g. a ``DataLoader``)
    batch_size : int
        Chunk size when ``x`` is a tensor.
    layers : {"branch", "all"}

    Returns
    -------
    DataFrame with columns ``block``, ``stage``, ``std``, ``mean``,
    ``n_elements``; with ``layers="all"`` also ``layer`` (1-based index over
    all rows, in forward order), after ``stage``.
    """
    model = _check_model(model)
    targets = _response_layers(model, layers)
    device = _device(model)
    # Per response: [count, sum, sum of squares], float64 on the model's device.
    acc = torch.zeros(len(targets), 3, dtype=torch.float64, device=device)

    def make_hook(i: int) -> Callable:
        def hook(_module, _inputs, out):
            # Reduced at once: a ReLU(inplace=True) may overwrite ``out`` right after.
            o = out.detach().double()
            acc[i, 0] += o.numel()
            acc[i, 1] += o.sum()
            acc[i, 2] += o.square().sum()

        return hook

    handles = [m.register_forward_hook(make_hook(i)) for i, (_, m) in enumerate(targets)]
    try:
        with _mode(model, train=False), torch.no_grad():
            for xb in _batches(x, batch_size):
                model(xb.to(device, non_blocking=True))
    finally:
        for h in handles:
            h.remove()
    count, total, total_sq = acc.cpu().unbind(1)
    if (count == 0).any():
        raise ValueError("layer_responses got no data: x is empty")
    mean = total / count
    # Sample variance over all elements (Bessel-corrected), clipped against round-off.
    var = ((total_sq - count * mean.square()) / (count - 1).clamp(min=1)).clamp(min=0)
    blocks = [i for i, _ in targets]
    table = pd.DataFrame(
        {
            "block": blocks,
            "stage": [model.block_stage[i] for i in blocks],
            "std": var.sqrt().numpy(),
            "mean": mean.numpy(),
            "n_elements": count.to(torch.int64).numpy(),
        }
    )
    if layers == "all":
        table.insert(2, "layer", range(1, len(table) + 1))
    return table


def gradient_norms(
    model: ResNet,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    *,
    train: bool = True,
) -> pd.DataFrame:
    """Per-block gradient norms of ``loss_fn(model(x), y)`` on one batch.

    Two columns, because they answer different questions:

    * ``input_grad_norm``: ``||d loss / d x_l||``, the L2 norm over the whole
      batch of the gradient reaching block ``l``'s input. This is the backward
      *signal*: through a plain net it must pass every later block's weights;
      through a residual net the identity paths carry it unchanged
      (``d x_L / d x_l = I + ...``, He et al. 2016, eq. 5), so early blocks keep
      a large gradient.
    * ``param_grad_norm``: the L2 norm of the gradient of all of block ``l``'s
      parameters (branch and projection shortcut), i.e. the size of that
      block's SGD update direction.

    ``train=True`` (default) measures what SGD sees: BN normalises with the
    batch's statistics. The BN running statistics are restored afterwards, the
    model's mode too, and no ``.grad`` is written (``torch.autograd.grad``).
    With ``train=False`` the running statistics are used, which at
    initialisation (mean 0, variance 1) means no normalisation at all.

    Parameters
    ----------
    x : tensor (N, C, H, W)
    y : tensor (N,) of class indices (or whatever ``loss_fn`` takes)
    loss_fn : callable (logits, y) -> scalar loss, mean-reduced by default.

    Returns
    -------
    DataFrame with columns ``block``, ``stage``, ``input_grad_norm``,
    ``param_grad_norm``, ``input_norm`` (``||x_l||``, to read the gradient
    relative to the activation's scale) and ``loss`` (the batch loss, the
    same on every row).

    Notes
    -----
    What this shows at initialisation (measured on CIFAR-shaped random
    batches, He init, 56 layers): in train mode the BN plain net's gradient
    does *not* vanish -- it grows towards the input, by a factor of ~5e3-1e4
    from the last block to the first (the gradient explosion of deep BN nets,
    Yang et al. 2019), against ~30 in ResNet-56. This agrees with He et al.
    2015, Sec. 4.1: with BN, plain nets' degradation "is unlikely to be caused
    by vanishing gradients". With ``train=False`` at initialisation (BN's
    running statistics are still 0 and 1, so nothing is normalised) the plain
    net's gradient does vanish: ~1e-3 at its first block, against ~1e2 for
    ResNet-56.
    """
    model = _check_model(model)
    device = _device(model)
    inputs: list[torch.Tensor] = []

    def pre_hook(_module, args):
        inputs.append(args[0])

    handles = [b.register_forward_pre_hook(pre_hook) for b in model.blocks]
    try:
        with _mode(model, train=train), torch.enable_grad():
            loss = loss_fn(model(x.to(device)), y.to(device))
            if loss.ndim != 0:
                raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
            params = [[p for p in b.parameters() if p.requires_grad] for b in model.blocks]
            flat = [p for ps in params for p in ps]
            grads = torch.autograd.grad(loss, inputs + flat, allow_unused=True)
    finally:
        for h in handles:
            h.remove()

    n = len(model.blocks)
    in_grads, p_grads = grads[:n], grads[n:]
    zero = torch.zeros((), dtype=torch.float64, device=device)
    input_norms = torch.stack(
        [g.detach().double().norm() if g is not None else zero for g in in_grads]
    )
    activation_norms = torch.stack([h.detach().double().norm() for h in inputs])
    param_norms, k = [], 0
    for ps in params:
        gs = [g for g in p_grads[k : k + len(ps)] if g is not None]
        k += len(ps)
        param_norms.append(
            torch.linalg.vector_norm(torch.stack([g.double().norm() for g in gs])) if gs else zero
        )
    # One host sync for the whole table.
    table = torch.stack([input_norms, torch.stack(param_norms), activation_norms]).cpu().numpy()
    return pd.DataFrame(
        {
            "block": range(n),
            "stage": list(model.block_stage),
            "input_grad_norm": table[0],
            "param_grad_norm": table[1],
            "input_norm": table[2],
            "loss": float(loss.detach()),
        }
    )


def block_contributions(model: ResNet, x: torch.Tensor) -> pd.DataFrame:
    """``||F(x)|| / ||shortcut(x)||`` per block, via :func:`residuals.core.contribution_table`.

    Runs in eval mode under ``torch.no_grad`` (the model's mode is restored).
    Plain blocks have no identity path: their ``base_norm`` is 0 and ``ratio`` is ``inf``.

    Returns
    -------
    DataFrame with columns ``block``, ``stage``, ``correction_norm``, ``base_norm``, ``ratio``.
    """
    model = _check_model(model)
    with _mode(model, train=False), torch.no_grad():
        table = contribution_table(model, x)
    table = table.rename(columns={"stage": "block"})
    table.insert(1, "stage", list(model.block_stage))
    return table
