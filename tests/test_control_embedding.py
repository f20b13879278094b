"""Elements in control messages (``sdk-python/ferrobeam/_control_embedding.py``).

Small bundles travel inside ``ProcessBundleRequest`` / ``ProcessBundleResponse``;
big ones on the data stream, all of a bundle's input or output in one place.
Each test runs a real job in a child process with the runner's bundle log on,
checks the results, and checks from the log which way each bundle went.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

_JOB = textwrap.dedent("""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    SIZE = {size}
    with beam.Pipeline(options=PipelineOptions(["--runner=ferrobeam.FerrobeamRunner"])) as p:
        sized = (p
                 | beam.Create(list(range(6)))
                 | "Grow" >> beam.Map(lambda i: (i % 2, "x" * SIZE))
                 | beam.GroupByKey()
                 | beam.MapTuple(lambda k, vs: (k, sum(len(v) for v in vs))))
        assert_that(sized, equal_to([(0, 3 * SIZE), (1, 3 * SIZE)]))
    print("JOB OK")
""")


def _run(size: int) -> Counter[tuple[str, str]]:
    env = dict(os.environ, RUST_LOG="ferrobeam_fnapi::worker=trace")
    out = subprocess.run([sys.executable, "-c", _JOB.format(size=size)], env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0 and "JOB OK" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    ways = Counter(re.findall(r"bundle response .*input_embedded=(\w+) output_embedded=(\w+)", out.stderr))
    assert ways, "no bundle was logged:\n" + out.stderr[-3000:]
    return ways


def test_small_bundles_travel_in_control_messages() -> None:
    ways = _run(100)
    assert set(ways) == {("true", "true")}, ways


@pytest.mark.parametrize("size", [(1 << 20) // 2], ids=["3MiB-per-key"])
def test_big_bundles_take_the_data_stream(size: int) -> None:
    # "Grow" makes 6 x 0.5 MiB: that output is over the embedding limit, so
    # it goes on the data stream; the GroupByKey's 1.5 MiB per key comes
    # back in as input too big to embed.  Results are exact either way.
    ways = _run(size)
    assert ways[("true", "false")] >= 1, ways  # small input, big output
    assert any(inp == "false" for inp, _ in ways), ways  # big input
