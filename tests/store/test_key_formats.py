"""Key formats (float16, int8, PQ): parsing, bytes per token, encode/decode error, the chunk view."""

from __future__ import annotations

import numpy as np
import pytest

from nest_integrations.errors import ConfigError, DatastoreError
from nest_integrations.store import EncodedKeys, KeyFormat
from nest_integrations.store.key_formats import dense_keys


def _keys(n: int = 3000, dim: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # hidden states are not isotropic: a few large directions plus noise
    basis = rng.standard_normal((8, dim)).astype(np.float32)
    return (rng.standard_normal((n, 8)).astype(np.float32) * 4) @ basis + rng.standard_normal((n, dim)).astype(
        np.float32
    )


def test_parse_names_and_errors() -> None:
    assert KeyFormat.parse("float16").name == "float16" and KeyFormat.parse("FP16").name == "float16"
    assert KeyFormat.parse("int8").m == 0
    pq = KeyFormat.parse("pq16")
    assert pq.is_pq and pq.m == 16 and not pq.trained
    for bad in ("pq0", "int4", "pq", "opq-16", ""):
        with pytest.raises(ConfigError, match="unknown key format"):
            KeyFormat.parse(bad)
    with pytest.raises(ConfigError, match="do not divide the hidden size 64"):
        KeyFormat.parse("pq48").check_dim(64)


def test_bytes_per_token() -> None:
    assert KeyFormat.parse("float16").bytes_per_token(576) == 1152
    assert KeyFormat.parse("int8").bytes_per_token(576) == 578
    assert KeyFormat.parse("pq96").bytes_per_token(576) == 96


@pytest.mark.parametrize("spec, max_rel_err", [("float16", 1e-5), ("int8", 1e-3), ("pq16", 0.35)])
def test_round_trip_error(spec: str, max_rel_err: float) -> None:
    x = _keys()
    fmt = KeyFormat.parse(spec).train(x)
    arrays = fmt.encode(x)
    assert {k: len(v) for k, v in arrays.items()} == {k: len(x) for k in fmt.row_arrays(64)}
    for name, (dt, shape) in fmt.row_arrays(64).items():
        assert arrays[name].dtype == dt and arrays[name].shape[1:] == shape
    y = fmt.decode(arrays)
    assert y.dtype == np.float32 and y.shape == x.shape
    rel = float(((y - x) ** 2).sum() / (x**2).sum())
    assert rel < max_rel_err
    # the nearest key of a query stays the nearest one most of the time (asymmetric distance)
    q = x[:200] + 0.3 * np.random.default_rng(1).standard_normal((200, 64)).astype(np.float32)
    d_true = ((q[:, None] - x[None]) ** 2).sum(-1)
    d_dec = ((q[:, None] - y[None]) ** 2).sum(-1)
    top_true, top_dec = np.argsort(d_true, 1)[:, :10], np.argsort(d_dec, 1)[:, :10]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_true, top_dec, strict=True)])
    assert overlap > (0.99 if spec != "pq16" else 0.5)


def test_pq_needs_training_and_enough_rows() -> None:
    fmt = KeyFormat.parse("pq8")
    with pytest.raises(DatastoreError, match="no codebook"):
        fmt.encode(_keys(300))
    with pytest.raises(DatastoreError, match="at least 256 tokens"):
        fmt.train(_keys(100))
    trained = fmt.train(_keys(1000))
    assert trained.trained and trained.centroids is not None and trained.centroids.shape == (8, 256, 8)
    assert trained == fmt  # equality is the format, not the codebook


def test_training_is_deterministic() -> None:
    x = _keys(2000)
    a, b = KeyFormat.parse("pq8").train(x), KeyFormat.parse("pq8").train(x)
    assert a.centroids is not None and b.centroids is not None and np.array_equal(a.centroids, b.centroids)


def test_encoded_view_slices_decode_rows() -> None:
    x = _keys(500)
    for spec in ("int8", "pq8"):
        fmt = KeyFormat.parse(spec).train(x)
        arrays = fmt.encode(x)
        view = fmt.view(arrays)
        assert isinstance(view, EncodedKeys) and view.shape == (500, 64) and len(view) == 500
        full = fmt.decode(arrays)
        assert np.array_equal(view[10:20], full[10:20])
        assert np.array_equal(np.asarray(view), full) and np.array_equal(dense_keys(view), full)
        with pytest.raises(TypeError):
            view[3]
    f16 = KeyFormat.parse("float16")
    arr = f16.view(f16.encode(x))
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float16
