"""Conventions shared by every model family (FGA-Seg, ITA and the families built on them): the parameter policy
survives loading, and attention weights can be asked for per call.

Travels as remote code with the modeling files: imports only installed libraries.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)


def loaded_model(loaded):
    """The model of a `from_pretrained` result (`output_loading_info=True` returns `(model, info)`)."""
    return loaded[0] if isinstance(loaded, tuple) else loaded


class ParameterPolicyMixin:
    """Keeps a model's `requires_grad` policy (FGA-Seg's CLIP fine-tuning policy, ITA's frozen CLIP) through
    `from_pretrained`.

    transformers 5 replaces every loaded parameter by a new `nn.Parameter` with `requires_grad=True`, so a policy set
    in `__init__` is lost. Every loading path (the class itself, the Auto classes, remote code, `output_loading_info`)
    ends in the class's `from_pretrained`, which re-applies `apply_parameter_policy` here. Put this mixin before
    `PreTrainedModel` in the bases.
    """

    def apply_parameter_policy(self) -> None:
        """Set `requires_grad` of every parameter as the config says (default: leave them alone)."""

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        loaded_model(loaded).apply_parameter_policy()
        return loaded


@contextlib.contextmanager
def recorded_attentions(config, modules: list[nn.Module], wanted: bool):
    """While `wanted`: run the attention of a transformers `config` eagerly and collect the weights (the second
    output) of each of `modules`, in call order; yields that list (None when not `wanted`).

    SDPA and flash kernels never form the attention matrix, so, as transformers does, a call that asks for the
    weights falls back to eager attention; the config's setting is restored on exit."""
    if not wanted:
        yield None
        return
    store: list[torch.Tensor] = []
    previous = config._attn_implementation_internal
    if previous not in (None, "eager"):
        logger.info("output_attentions=True: this call runs %s attention eagerly (%s returns no weights)",
                    type(config).__name__, previous)
    config._attn_implementation_internal = "eager"

    def hook(module, args, output):
        if isinstance(output, tuple) and len(output) > 1 and isinstance(output[1], torch.Tensor):
            store.append(output[1])

    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()
        config._attn_implementation_internal = previous


__all__ = ["ParameterPolicyMixin", "loaded_model", "recorded_attentions"]
