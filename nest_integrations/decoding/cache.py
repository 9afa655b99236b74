"""KV-cache helpers: building a cache that can be rolled back, refusing models whose cache cannot, cropping.

NEST verifies a draft in one forward and then drops the rejected tokens from the cache, exactly like
transformers' assisted decoding (``GenerationMixin._assisted_decoding``). These helpers follow what
transformers does there:

* the cache is a ``DynamicCache`` built from the model's (text) config, as ``_prepare_cache_for_generation``
  builds it, so sliding-window and hybrid sliding/global layers get their own layer classes;
* past recording is switched on (``Cache.activate_past_recording``, as for an assistant's cache), so a
  sliding-window layer keeps the states of a forward until the next ``crop``: without it, a sliding-window
  layer past its window cannot drop the last tokens it has seen, and its ``crop`` raises;
* stateful models (Mamba-style recurrent state, ``_is_stateful``) and models without a default dynamic cache
  are refused, as ``generate`` refuses assisted decoding for them;
* after the prefill, ``Cache.is_croppable`` must hold (linear-attention layers only know whether they can be
  rolled back once initialised), as ``_assisted_decoding`` checks before its first ``crop``.
"""

from __future__ import annotations

import inspect
from typing import Any

from nest_integrations.errors import UnsupportedModelError

__all__ = ["cache_kwarg", "check_croppable", "check_rollback", "crop_cache", "model_name", "new_cache"]

_WHY = (
    "NEST, like transformers' assisted decoding, must drop the rejected draft tokens from the cache after "
    "each verification; use a model with attention layers only (e.g. Llama, Mistral, Qwen2/3, Gemma-2/3, "
    "Phi-3, GPT-2, GPT-NeoX, OLMo-2)"
)


def model_name(model: Any) -> str:
    """``ClassName (model_type 'x')`` of a transformers model, for messages."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None) or "unknown"
    return f"{type(model).__name__} (model_type {model_type!r})"


def check_rollback(model: Any) -> None:
    """Refuse, before anything runs, a model whose cache transformers itself cannot roll back.

    Raises:
        UnsupportedModelError: the model keeps a recurrent state (``_is_stateful``: Mamba, Jamba, Zamba,
            Qwen3-Next, RecurrentGemma, …) or has no default ``DynamicCache`` (RWKV, MiniMax, …).
    """
    if getattr(model, "_is_stateful", False):
        raise UnsupportedModelError(
            f"{model_name(model)} keeps a recurrent (state-space / linear-attention) state that cannot be rolled "
            f"back to an earlier position; {_WHY}"
        )
    supports = getattr(type(model), "_supports_default_dynamic_cache", None)
    if supports is not None and not supports():
        raise UnsupportedModelError(
            f"{model_name(model)} does not use a transformers DynamicCache (it has its own cache), so its cache "
            f"cannot be cropped; {_WHY}"
        )


def new_cache(model: Any) -> Any:
    """A ``DynamicCache`` for ``model`` that rejected draft tokens can be cropped from (see the module docstring)."""
    from transformers import DynamicCache

    check_rollback(model)
    config = model.config
    text_config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    cache = DynamicCache(config=text_config)
    if hasattr(cache, "activate_past_recording"):
        cache.activate_past_recording()
    else:  # pragma: no cover - transformers releases without past recording: full layers crop everywhere
        cache = DynamicCache()
    return cache


def check_croppable(cache: Any, model: Any) -> None:
    """After the prefill (before the first crop): every layer of ``cache`` must be croppable.

    Raises:
        UnsupportedModelError: a layer transformers marks non-croppable (e.g. a linear-attention layer holding a
            recurrent state, a quantized layer).
    """
    if getattr(cache, "is_croppable", True):
        return
    bad = sorted({type(layer).__name__ for layer in getattr(cache, "layers", []) if not layer.is_croppable})
    raise UnsupportedModelError(
        f"the cache of {model_name(model)} cannot be cropped (non-croppable layers: {', '.join(bad) or 'unknown'}); "
        f"{_WHY}"
    )


def cache_kwarg(model: Any) -> str:
    """The keyword the model's ``forward`` takes its cache under (``cache`` in newer transformers, else
    ``past_key_values``)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic wrappers
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def crop_cache(cache: Any, length: int) -> None:
    """Crop a transformers ``DynamicCache`` so it holds exactly the first ``length`` positions.

    transformers 5.x ``DynamicCache.crop(n)`` takes a NEGATIVE count of tokens to remove (a positive
    absolute length raises), so the count is computed here from the current length. The crop is made
    even when nothing is removed (``crop(0)``): with past recording on, that is what trims sliding-window
    layers back to their window, as transformers' assisted decoding does after every verification.
    """
    current = int(cache.get_seq_length())
    if length > current or length < 0:
        raise ValueError(f"cannot crop a cache of {current} positions to {length}")
    cache.crop(length - current)
