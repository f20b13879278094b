"""State larger than memory (issue 5): RocksDB keeps it on disk.

``big_state_pipeline.py`` runs in a cgroup v1 memory group smaller than its
user state: with RocksDB it completes and every key's value reads back
intact; with the memory backend the same job cannot fit. The 20M-key version
runs outside CI: ``python tests/big_state_pipeline.py --keys 20000000
--value_bytes 100 --memory_limit 2G --output /tmp/big``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import big_state_pipeline

#: The job may use this much memory (workers, job server, RocksDB's caches
#: and the page cache of its files all count)...
LIMIT = 900 << 20
#: ...while its state is this large.
KEYS = 120_000
VALUE_BYTES = 10_000

pytestmark = pytest.mark.skipif(
    not big_state_pipeline.cgroup_available(),
    reason="needs a writable cgroup v1 memory controller at %s (root)" % big_state_pipeline.CGROUP_ROOT)


def _run(tmp_path: Path, backend: str) -> tuple[int, int, str]:
    return big_state_pipeline.run_limited(
        ["--keys", str(KEYS), "--value_bytes", str(VALUE_BYTES), "--output", str(tmp_path / backend),
         "--state_backend=%s" % backend, "--ferrobeam_workers=1"],
        LIMIT, timeout=900)


@pytest.mark.timeout(1200)
def test_state_larger_than_the_memory_limit(tmp_path: Path) -> None:
    assert KEYS * VALUE_BYTES > 1.2 * LIMIT
    status, peak, tail = _run(tmp_path, "rocksdb")
    assert status == 0, tail
    assert "%d ok, 0 other" % KEYS in tail, tail
    assert peak <= LIMIT
    # The limit is real: the same job with its state in memory does not fit.
    status, _, tail = _run(tmp_path, "memory")
    assert status != 0, "the memory backend fit in %d MiB after all:\n%s" % (LIMIT >> 20, tail)
