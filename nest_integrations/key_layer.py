"""Reading the key layer's hidden states without keeping every layer's (NEST.md §2).

NEST's keys and queries are one entry of a model's ``hidden_states`` tuple (``NestConfig.key_layer``;
entry 0 = the embeddings, entry i = the output of decoder layer i-1). ``output_hidden_states=True`` would
keep all L+1 of them, each (B, T, D), for one; :class:`KeyLayerTap` instead reads the one entry with a
forward hook on the decoder layer that produces it. The first time a model and layer are used, the tap
checks itself against ``output_hidden_states=True`` on a short input; where the two differ (an
architecture that post-processes that entry, e.g. the final norm on the last one), it falls back to
``output_hidden_states=True`` and says so in :attr:`KeyLayerTap.mode`.

Hooks are per thread: a forward pass in another thread (a second engine over the same weights) is not
captured by this thread's tap.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["KeyLayerTap", "decoder_layers", "tap_for"]

_VERIFIED: weakref.WeakKeyDictionary[Any, dict[int, str]] = weakref.WeakKeyDictionary()
_VERIFY_LOCK = threading.Lock()


def decoder_layers(model: Any) -> torch.nn.ModuleList | None:
    """The model's list of decoder layers (``model.model.layers``, ``transformer.h``, ...), or None."""
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    body = model.get_decoder() if hasattr(model, "get_decoder") else model
    for root in (body, getattr(model, "model", None), getattr(model, "transformer", None), model):
        if root is None:
            continue
        for name in ("layers", "h", "blocks", "decoder_layers"):
            mods = getattr(root, name, None)
            if isinstance(mods, torch.nn.ModuleList) and (n is None or len(mods) == n):
                return mods
    return None


class KeyLayerTap:
    """Captures ``hidden_states[key_layer]`` of a forward pass of ``model``.

    Args:
        model: a ``transformers`` causal LM, or its decoder stack (anything whose forward accepts
            ``output_hidden_states``).
        key_layer: index into the ``hidden_states`` tuple (negative counts from the end).
        config_model: the model whose config and layers to use when ``model`` is the decoder stack.

    Use :meth:`forward`: it runs ``model(**kwargs)`` and returns ``(output, states)`` with ``states`` the
    (B, T, D) key-layer hidden states in the model's dtype, on its device.
    """

    def __init__(self, model: Any, key_layer: int, config_model: Any | None = None) -> None:
        owner = config_model if config_model is not None else model
        self.model = model
        n_layers = int(getattr(owner.config, "num_hidden_layers", 0) or getattr(owner.config, "n_layer", 0))
        n_states = n_layers + 1
        if not -n_states <= key_layer < n_states:
            raise ValueError(f"key_layer {key_layer} out of range for a model with {n_states} hidden states")
        self.index = key_layer % n_states
        self.key_layer = key_layer
        layers = decoder_layers(owner)
        self._module = layers[self.index - 1] if layers is not None and 0 < self.index < n_layers else None
        self._local = threading.local()
        self._hook = None
        #: ``hook`` (one layer's output read in place) or ``all-states`` (the fallback)
        self.mode = "hook" if self._module is not None and self._verify() else "all-states"

    # ---- the hook ------------------------------------------------------------------------
    def _on_output(self, _module, _args, output) -> None:
        box = getattr(self._local, "box", None)
        if box is not None:
            box.append(output[0] if isinstance(output, tuple) else output)

    @contextmanager
    def _capturing(self) -> Iterator[list[torch.Tensor]]:
        # the hook lives only for the duration of one forward pass, so a copied or pickled model
        # never carries it
        box: list[torch.Tensor] = []
        self._local.box = box
        assert self._module is not None
        hook = self._module.register_forward_hook(self._on_output)
        try:
            yield box
        finally:
            hook.remove()
            self._local.box = None

    def close(self) -> None:
        """Remove the hook from the model."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    # ---- forward -------------------------------------------------------------------------
    def forward(self, **kwargs: Any) -> tuple[Any, torch.Tensor]:
        """``(model(**kwargs), hidden_states[key_layer])``; the states are (B, T, D)."""
        if self.mode == "all-states":
            out = self.model(**kwargs, output_hidden_states=True)
            return out, out.hidden_states[self.index]
        with self._capturing() as box:
            out = self.model(**kwargs)
        if len(box) != 1:
            raise RuntimeError(f"key-layer hook fired {len(box)} times in one forward pass")
        return out, box[0]

    def _verify(self) -> bool:
        """Compare the hook with ``output_hidden_states=True`` once per (model, layer) on a short input."""
        with _VERIFY_LOCK:
            seen = _VERIFIED.setdefault(self.model, {})
            if self.index in seen:
                return seen[self.index] == "hook"
            try:
                device = next(self.model.parameters()).device
            except StopIteration:  # pragma: no cover - a model without parameters
                device = None
            probe = torch.tensor([[1, 2, 3, 4]], dtype=torch.long, device=device)
            with torch.inference_mode():
                ref = self.model(input_ids=probe, use_cache=False, output_hidden_states=True).hidden_states[self.index]
                with self._capturing() as box:
                    self.model(input_ids=probe, use_cache=False)
            ok = len(box) == 1 and box[0].shape == ref.shape and torch.equal(box[0], ref)
            seen[self.index] = "hook" if ok else "all-states"
            return ok


def tap_for(model: Any, key_layer: int, config_model: Any | None = None) -> KeyLayerTap:
    """A :class:`KeyLayerTap` shared per (model, key layer), created on first use."""
    taps = _TAPS.setdefault(model, {})
    tap = taps.get(key_layer)
    if tap is None:
        tap = taps[key_layer] = KeyLayerTap(model, key_layer, config_model)
    return tap


_TAPS: weakref.WeakKeyDictionary[Any, dict[int, KeyLayerTap]] = weakref.WeakKeyDictionary()
