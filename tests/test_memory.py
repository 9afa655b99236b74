"""_memory: handing freed heap back to the system during long builds (glibc; a no-op elsewhere)."""

from __future__ import annotations

import sys

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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_large_blocks_go_back_to_the_system_inside_the_block() -> None:
    def anon_mb() -> float:
        for line in open("/proc/self/status"):  # noqa: SIM115
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
        pytest.skip("no RssAnon in /proc/self/status")

    if _memory._mallopt() is None:
        pytest.skip("not glibc")
    with _memory.large_allocations_mapped():
        before = anon_mb()
        blocks = [np.ones((1 << 20,), dtype=np.float64) for _ in range(32)]  # 256 MiB, touched
        assert anon_mb() > before + 200
        del blocks
        assert anon_mb() < before + 50  # unmapped when freed, without a trim
