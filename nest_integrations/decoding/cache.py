"""KV-cache helpers."""

from __future__ import annotations

from typing import Any

__all__ = ["crop_cache"]


def crop_cache(cache: Any, length: int) -> None:
    """Crop a transformers ``DynamicCache`` so it holds exactly the first ``length`` positions.

    transformers 5.x ``DynamicCache.crop(n)`` takes a NEGATIVE count of tokens to remove (a positive
    absolute length raises), so the count is computed here from the current length.
    """
    current = int(cache.get_seq_length())
    if length > current or length < 0:
        raise ValueError(f"cannot crop a cache of {current} positions to {length}")
    if length < current:
        cache.crop(length - current)
