"""_memory: handing freed heap back to the system during long builds (glibc; a no-op elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest

from nest_integrations import _memory


def test_release_and_mapped_block_keep_working_and_restore_on_error() -> None:
    _memory.release_free_memory()
    with _memory.large_allocations_mapped():
        a = np.ones((1 << 18,), dtype=np.float64)  # 2 MiB: mapped inside the block
        assert float(a.sum()) == float(1 << 18)
    with pytest.raises(ValueError, match="inside"), _memory.large_allocations_mapped():
        raise ValueError("inside")
    b = np.ones((1 << 18,), dtype=np.float64)  # allocations work after the threshold was restored
    assert float(b.sum()) == float(1 << 18)
