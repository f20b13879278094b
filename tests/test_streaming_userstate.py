"""Stateful DoFns and timers in ``--streaming`` mode: Beam's own tests.

The pipelines and expected results here are those of
``apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest``
(apache-beam 2.77.0), one test per Beam test, each naming its source. Beam's
tests record their output by appending to a class attribute from a DoFn, which
only works when every bundle runs in the test's own process; ferrobeam runs
user code in worker processes too. So the ported pipelines end in
:class:`_Record`, which appends each element to a file, and the test compares
the file's records, in the order they were written, with Beam's expected list
(sorted where Beam sorts, as a multiset where Beam uses ``equal_to``). Tests
that already use ``assert_that`` keep it.

Beam's TestStream tests build a plain ``TestPipeline()``; under Beam's own test
runs that is the DirectRunner, which switches to its streaming mode for a
TestStream. Here every pipeline runs on ferrobeam with ``--streaming``.
"""

from __future__ import annotations

import fcntl
import pickle
import struct
from pathlib import Path
from typing import Any, Iterator, Sequence

import mock
import pytest

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.coders import ListCoder
from apache_beam.coders import StrUtf8Coder
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
from apache_beam.transforms import trigger
from apache_beam.transforms import window
from apache_beam.transforms.combiners import CountCombineFn
from apache_beam.transforms.combiners import ToListCombineFn
from apache_beam.transforms.core import DoFn
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec
from apache_beam.transforms.userstate import CombiningValueStateSpec
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.userstate import SetStateSpec
from apache_beam.transforms.userstate import TimerSpec
from apache_beam.transforms.userstate import on_timer

SOURCE = "apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::"

_LEN = struct.Struct(">I")


def _pipeline(*extra: str) -> beam.Pipeline:
    return beam.Pipeline(options=PipelineOptions(["--runner=ferrobeam.FerrobeamRunner", "--streaming", *extra]))


class _Record(DoFn):
    """Appends each element to a file (Beam's ``record_dofn``, across processes).

    Records are length-prefixed pickles written under an exclusive lock, so
    the file holds them in the order the workers produced them.
    """

    def __init__(self, path: Path) -> None:
        self._path = str(path)

    def process(self, element: Any) -> None:
        data = pickle.dumps(element)
        with open(self._path, "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(_LEN.pack(len(data)) + data)
            f.flush()


def _records(path: Path) -> list[Any]:
    """Everything :class:`_Record` wrote to ``path``, in order."""
    if not path.exists():
        return []
    data, out, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (n,) = _LEN.unpack_from(data, pos)
        out.append(pickle.loads(data[pos + _LEN.size:pos + _LEN.size + n]))
        pos += _LEN.size + n
    return out


@pytest.fixture
def records_file(tmp_path: Path) -> Path:
    """Where this test's :class:`_Record` writes."""
    return tmp_path / "records.bin"


def _record(path: Path) -> beam.ParDo:
    return beam.ParDo(_Record(path))


# ---------------------------------------------------------------------------
# Bag, read-modify-write, set and combining state with watermark timers.
# ---------------------------------------------------------------------------


class _SimpleBagDoFn(DoFn):
    BUFFER_STATE = BagStateSpec("buffer", BytesCoder())
    EXPIRY_TIMER = TimerSpec("expiry", TimeDomain.WATERMARK)

    def process(self, element: Any, buffer: Any = DoFn.StateParam(BUFFER_STATE),
                timer1: Any = DoFn.TimerParam(EXPIRY_TIMER)) -> None:
        unused_key, value = element
        buffer.add(b"A" + str(value).encode("latin1"))
        timer1.set(20)

    @on_timer(EXPIRY_TIMER)
    def expiry_callback(self, buffer: Any = DoFn.StateParam(BUFFER_STATE),
                        timer: Any = DoFn.TimerParam(EXPIRY_TIMER)) -> Iterator[bytes]:
        yield b"".join(sorted(buffer.read()))


def test_simple_stateful_dofn(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_simple_stateful_dofn
    stream = (TestStream().advance_watermark_to(10).add_elements([1, 2]).add_elements([3])
              .advance_watermark_to(25).add_elements([4]))  # yapf: disable
    with _pipeline() as p:
        _ = (p | stream | beam.Map(lambda x: ("mykey", x)) | beam.ParDo(_SimpleBagDoFn())
             | _record(records_file))
    # Beam: the timer fires once the watermark passes 20, and again at once
    # for element 4, whose timer at 20 is already behind the watermark.
    assert _records(records_file) == [b"A1A2A3", b"A1A2A3A4"]


class _BagClearingDoFn(DoFn):
    BAG_STATE = BagStateSpec("bag_state", StrUtf8Coder())
    EMIT_TIMER = TimerSpec("emit_timer", TimeDomain.WATERMARK)
    CLEAR_TIMER = TimerSpec("clear_timer", TimeDomain.WATERMARK)

    def process(self, element: Any, bag_state: Any = DoFn.StateParam(BAG_STATE),
                emit_timer: Any = DoFn.TimerParam(EMIT_TIMER),
                clear_timer: Any = DoFn.TimerParam(CLEAR_TIMER)) -> None:
        bag_state.add(element[1])
        clear_timer.set(100)
        emit_timer.set(1000)

    @on_timer(EMIT_TIMER)
    def emit_values(self, bag_state: Any = DoFn.StateParam(BAG_STATE)) -> Iterator[str]:
        yield from bag_state.read()
        yield "extra"

    @on_timer(CLEAR_TIMER)
    def clear_values(self, bag_state: Any = DoFn.StateParam(BAG_STATE)) -> None:
        bag_state.clear()


def test_clearing_bag_state(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_clearing_bag_state
    stream = TestStream().advance_watermark_to(0).add_elements([("key", "value")]).advance_watermark_to(100)
    with _pipeline() as p:
        _ = p | stream | beam.ParDo(_BagClearingDoFn()) | _record(records_file)
    assert _records(records_file) == ["extra"]


class _TwoTimersOneCallbackDoFn(DoFn):
    BAG_STATE = BagStateSpec("bag_state", StrUtf8Coder())
    EMIT_TIMER = TimerSpec("emit_timer", TimeDomain.WATERMARK)
    EMIT_TWICE_TIMER = TimerSpec("clear_timer", TimeDomain.WATERMARK)

    def process(self, element: Any, bag_state: Any = DoFn.StateParam(BAG_STATE),
                emit_timer: Any = DoFn.TimerParam(EMIT_TIMER),
                emit_twice_timer: Any = DoFn.TimerParam(EMIT_TWICE_TIMER)) -> None:
        bag_state.add(element[1])
        emit_twice_timer.set(100)
        emit_timer.set(1000)

    @on_timer(EMIT_TWICE_TIMER)
    @on_timer(EMIT_TIMER)
    def emit_values(self, bag_state: Any = DoFn.StateParam(BAG_STATE)) -> Iterator[str]:
        yield from bag_state.read()


def test_two_timers_one_function(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_two_timers_one_function
    stream = TestStream().advance_watermark_to(0).add_elements([("key", "value")]).advance_watermark_to(100)
    with _pipeline() as p:
        _ = p | stream | beam.ParDo(_TwoTimersOneCallbackDoFn()) | _record(records_file)
    assert _records(records_file) == ["value", "value"]


class _ReadModifyWriteDoFn(DoFn):
    VALUE_STATE = ReadModifyWriteStateSpec("value", StrUtf8Coder())

    def process(self, element: Any, last_element: Any = DoFn.StateParam(VALUE_STATE)) -> Iterator[str]:
        last_element.write("%s:%s" % element)
        yield last_element.read()


def _rmw_stream() -> TestStream:
    return (TestStream().advance_watermark_to(0).add_elements([("a", 1)])
            .advance_watermark_to(10).add_elements([("a", 3)])
            .advance_watermark_to(20).add_elements([("a", 5)]))  # yapf: disable


def test_simple_read_modify_write_stateful_dofn(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_simple_read_modify_write_stateful_dofn
    with _pipeline() as p:
        _ = p | _rmw_stream() | beam.ParDo(_ReadModifyWriteDoFn()) | _record(records_file)
    assert _records(records_file) == ["a:1", "a:3", "a:5"]


class _ClearingReadModifyWriteDoFn(DoFn):
    VALUE_STATE = ReadModifyWriteStateSpec("value", StrUtf8Coder())

    def process(self, element: Any, last_element: Any = DoFn.StateParam(VALUE_STATE)) -> Iterator[str]:
        value = last_element.read()
        if value is not None:
            yield value
        last_element.clear()
        last_element.write("%s:%s" % (last_element.read(), element[1]))
        if element[1] == 5:
            yield last_element.read()


def test_clearing_read_modify_write_state(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_clearing_read_modify_write_state
    with _pipeline() as p:
        _ = p | _rmw_stream() | beam.ParDo(_ClearingReadModifyWriteDoFn()) | _record(records_file)
    assert _records(records_file) == ["None:1", "None:3", "None:5"]


class _SimpleSetDoFn(DoFn):
    BUFFER_STATE = SetStateSpec("buffer", VarIntCoder())
    EXPIRY_TIMER = TimerSpec("expiry", TimeDomain.WATERMARK)

    def process(self, element: Any, buffer: Any = DoFn.StateParam(BUFFER_STATE),
                timer1: Any = DoFn.TimerParam(EXPIRY_TIMER)) -> None:
        unused_key, value = element
        buffer.add(value)
        timer1.set(20)

    @on_timer(EXPIRY_TIMER)
    def expiry_callback(self, buffer: Any = DoFn.StateParam(BUFFER_STATE)) -> Iterator[list[int]]:
        yield sorted(buffer.read())


def test_simple_set_stateful_dofn(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_simple_set_stateful_dofn
    stream = TestStream().advance_watermark_to(10).add_elements([1, 2, 3]).add_elements([2]).advance_watermark_to(24)
    with _pipeline() as p:
        _ = (p | stream | beam.Map(lambda x: ("mykey", x)) | beam.ParDo(_SimpleSetDoFn())
             | _record(records_file))
    assert _records(records_file) == [[1, 2, 3]]


class _SetClearingDoFn(DoFn):
    SET_STATE = SetStateSpec("buffer", StrUtf8Coder())
    EMIT_TIMER = TimerSpec("emit_timer", TimeDomain.WATERMARK)
    CLEAR_TIMER = TimerSpec("clear_timer", TimeDomain.WATERMARK)

    def process(self, element: Any, set_state: Any = DoFn.StateParam(SET_STATE),
                emit_timer: Any = DoFn.TimerParam(EMIT_TIMER),
                clear_timer: Any = DoFn.TimerParam(CLEAR_TIMER)) -> None:
        set_state.add(element[1])
        clear_timer.set(100)
        emit_timer.set(1000)

    @on_timer(EMIT_TIMER)
    def emit_values(self, set_state: Any = DoFn.StateParam(SET_STATE)) -> Iterator[str]:
        yield from set_state.read()

    @on_timer(CLEAR_TIMER)
    def clear_values(self, set_state: Any = DoFn.StateParam(SET_STATE)) -> None:
        set_state.clear()
        set_state.add("different-value")


def test_clearing_set_state(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_clearing_set_state
    stream = TestStream().advance_watermark_to(0).add_elements([("key1", "value1")]).advance_watermark_to(100)
    with _pipeline() as p:
        _ = p | stream | beam.ParDo(_SetClearingDoFn()) | _record(records_file)
    assert _records(records_file) == ["different-value"]


class _SetSumDoFn(DoFn):
    SET_STATE = SetStateSpec("buffer", VarIntCoder())

    def process(self, element: Any, set_state: Any = DoFn.StateParam(SET_STATE)) -> Iterator[int]:
        _, value = element
        set_state.add(value)
        yield sum(set_state.read())


def test_stateful_set_state_portably() -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_stateful_set_state_portably
    # (a bounded Create in Beam's test; run here in --streaming mode).
    with _pipeline() as p:
        values = p | beam.Create([("key", 1), ("key", 2), ("key", 3), ("key", 4), ("key", 3)], reshuffle=False)
        assert_that(values | beam.ParDo(_SetSumDoFn()), equal_to([1, 3, 6, 10, 10]))


# Beam's test mocks random to always return 1.0, forcing a compaction of the
# set state's cache on every add, and delays every append and clear sent
# through the SDK's gRPC state handler. The mocks patch this process, so the
# pipeline runs on LOOPBACK workers (in this process) as in Beam's test. It
# goes to the session's standalone job server: LOOPBACK workers of the
# embedded server would reach state through its socket, not gRPC.
@mock.patch("apache_beam.runners.worker.bundle_processor.random.random", lambda: 1.0)
def test_stateful_set_state_compaction_race_portably(job_endpoint: str) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_stateful_set_state_compaction_race_portably
    import queue  # pylint: disable=import-outside-toplevel
    import threading  # pylint: disable=import-outside-toplevel
    import time  # pylint: disable=import-outside-toplevel

    from apache_beam.runners.worker.sdk_worker import GrpcStateHandler  # pylint: disable=import-outside-toplevel
    from apache_beam.runners.worker.sdk_worker import _Future  # pylint: disable=import-outside-toplevel

    old_request = GrpcStateHandler._request
    request_queue: "queue.Queue[Any]" = queue.Queue()
    delayed: list[int] = []

    def worker() -> None:
        while True:
            handler, request, future, instruction_id = request_queue.get()
            time.sleep(0.1)  # Simulate latency for each request sequentially.
            handler._context.process_instruction_id = instruction_id
            underlying_future = old_request(handler, request)
            underlying_future.wait()
            future.set(underlying_future.get())
            request_queue.task_done()

    threading.Thread(target=worker, daemon=True).start()

    def delayed_request(self: Any, request: Any) -> Any:
        if request.HasField("append") or request.HasField("clear"):
            delayed.append(1)
            future = _Future()
            instruction_id = getattr(self._context, "process_instruction_id", None)
            request_queue.put((self, request, future, instruction_id))
            return future
        return old_request(self, request)

    GrpcStateHandler._request = delayed_request
    try:
        stream = (TestStream(coder=beam.coders.TupleCoder((beam.coders.StrUtf8Coder(), beam.coders.VarIntCoder())))
                  .advance_watermark_to(10).add_elements([("key", 1)])
                  .advance_watermark_to(20).add_elements([("key", 2)])
                  .advance_watermark_to(30))  # yapf: disable
        options = PipelineOptions([
            "--runner=PortableRunner", "--job_endpoint=" + job_endpoint, "--streaming",
            "--max_cache_memory_usage_mb=100", "--environment_type=LOOPBACK",
        ])
        with beam.Pipeline(options=options) as p:
            assert_that(p | stream | beam.ParDo(_SetSumDoFn()), equal_to([1, 3]))
    finally:
        GrpcStateHandler._request = old_request
    # Ours: the race was exercised, i.e. state writes did go through the
    # delayed gRPC handler.
    assert delayed


class _SetCleanDoFn(DoFn):
    SET_STATE = SetStateSpec("buffer", VarIntCoder())
    EMIT_TIMER = TimerSpec("emit_timer", TimeDomain.WATERMARK)

    def process(self, element: Any, set_state: Any = DoFn.StateParam(SET_STATE),
                emit_timer: Any = DoFn.TimerParam(EMIT_TIMER)) -> None:
        _, value = element
        set_state.add(value)
        if len(list(set_state.read())) == 5:
            set_state.clear()
            set_state.add(100)
            emit_timer.set(1)

    @on_timer(EMIT_TIMER)
    def emit_values(self, set_state: Any = DoFn.StateParam(SET_STATE)) -> Iterator[list[int]]:
        yield sorted(set_state.read())


def test_stateful_set_state_clean_portably() -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_stateful_set_state_clean_portably
    # (pinned to the FnApiRunner in batch there; run here in --streaming mode).
    with _pipeline() as p:
        values = p | beam.Create([("key", 1), ("key", 2), ("key", 3), ("key", 4), ("key", 5)])
        actual = (values
                  | beam.Map(lambda t: window.TimestampedValue(t, 1))
                  | beam.WindowInto(window.FixedWindows(1))
                  | beam.ParDo(_SetCleanDoFn()))  # yapf: disable
        assert_that(actual, equal_to([[100]]))


def test_stateful_dofn_nonkeyed_input() -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_stateful_dofn_nonkeyed_input
    # Refused while the pipeline is built, before any runner sees it.
    p = _pipeline()
    values = p | beam.Create([1, 2, 3])
    with pytest.raises(ValueError, match="Input elements to the transform .* with stateful DoFn must be key-value pairs."):
        _ = values | beam.ParDo(_SimpleBagDoFn())


# ---------------------------------------------------------------------------
# Processing-time timers.
# ---------------------------------------------------------------------------


class _GenerateRecords(DoFn):
    EMIT_TIMER = TimerSpec("emit_timer", TimeDomain.REAL_TIME)
    COUNT_STATE = CombiningValueStateSpec("count_state", VarIntCoder(), CountCombineFn())

    def __init__(self, frequency: int, total_records: int) -> None:
        self.total_records = total_records
        self.frequency = frequency

    def process(self, element: Any, emit_timer: Any = DoFn.TimerParam(EMIT_TIMER)) -> Iterator[Any]:
        # Processing time timers should be set on ABSOLUTE TIME.
        emit_timer.set(self.frequency)
        yield element[1]

    @on_timer(EMIT_TIMER)
    def emit_values(self, emit_timer: Any = DoFn.TimerParam(EMIT_TIMER),
                    count_state: Any = DoFn.StateParam(COUNT_STATE)) -> Iterator[str]:
        count = count_state.read() or 0
        if self.total_records == count:
            return
        count_state.add(1)
        # Processing time timers should be set on ABSOLUTE TIME.
        emit_timer.set(count + 1 + self.frequency)
        yield "value"


def test_generate_sequence_with_realtime_timer(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_generate_sequence_with_realtime_timer
    # (pinned to the DirectRunner there).
    stream = (TestStream().advance_watermark_to(0).add_elements([("key", 0)])
              .advance_processing_time(1)  # Timestamp: 1
              .add_elements([("key", 1)]).advance_processing_time(1)  # Timestamp: 2
              .add_elements([("key", 2)]).advance_processing_time(1)  # Timestamp: 3
              .add_elements([("key", 3)]))  # yapf: disable
    with _pipeline() as p:
        _ = p | stream | beam.ParDo(_GenerateRecords(1, 3)) | _record(records_file)
    # Beam: 4 records go through process, 3 values are emitted from the timer,
    # and processing time moves gradually.
    assert _records(records_file) == [0, "value", 1, "value", 2, "value", 3]


# ---------------------------------------------------------------------------
# Combining state, timer output timestamps and windows, dynamic timers.
# ---------------------------------------------------------------------------


class _CombiningDoFn(DoFn):
    BUFFER_STATE = CombiningValueStateSpec("buffer", ListCoder(VarIntCoder()), ToListCombineFn())
    EXPIRY_TIMER = TimerSpec("expiry1", TimeDomain.WATERMARK)

    def process(self, element: Any, buffer: Any = DoFn.StateParam(BUFFER_STATE),
                timer1: Any = DoFn.TimerParam(EXPIRY_TIMER)) -> None:
        unused_key, value = element
        buffer.add(value)
        timer1.set(20)

    @on_timer(EXPIRY_TIMER)
    def expiry_callback(self, buffer: Any = DoFn.StateParam(BUFFER_STATE),
                        timer: Any = DoFn.TimerParam(EXPIRY_TIMER)) -> Iterator[str]:
        yield "".join(str(x) for x in sorted(buffer.read()))


def test_simple_stateful_dofn_combining(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_simple_stateful_dofn_combining
    stream = (TestStream().advance_watermark_to(10).add_elements([1, 2]).add_elements([3])
              .advance_watermark_to(25).add_elements([4]))  # yapf: disable
    with _pipeline() as p:
        _ = (p | stream | beam.Map(lambda x: ("mykey", x)) | beam.ParDo(_CombiningDoFn())
             | _record(records_file))
    assert _records(records_file) == ["123", "1234"]


class _ThreeTimersDoFn(DoFn):
    EMIT_TIMER_1 = TimerSpec("emit1", TimeDomain.WATERMARK)
    EMIT_TIMER_2 = TimerSpec("emit2", TimeDomain.WATERMARK)
    EMIT_TIMER_3 = TimerSpec("emit3", TimeDomain.WATERMARK)

    def process(self, element: Any, timer1: Any = DoFn.TimerParam(EMIT_TIMER_1),
                timer2: Any = DoFn.TimerParam(EMIT_TIMER_2),
                timer3: Any = DoFn.TimerParam(EMIT_TIMER_3)) -> None:
        timer1.set(10)
        timer2.set(20)
        timer3.set(30)

    @on_timer(EMIT_TIMER_1)
    def emit_callback_1(self) -> Iterator[str]:
        yield "timer1"

    @on_timer(EMIT_TIMER_2)
    def emit_callback_2(self) -> Iterator[str]:
        yield "timer2"

    @on_timer(EMIT_TIMER_3)
    def emit_callback_3(self) -> Iterator[str]:
        yield "timer3"


class _ReifyTimestamp(DoFn):
    def process(self, element: Any, ts: Any = DoFn.TimestampParam) -> Iterator[tuple[Any, int]]:
        yield (element, int(ts))


def test_timer_output_timestamp(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_timer_output_timestamp
    stream = TestStream().advance_watermark_to(10).add_elements([1])
    with _pipeline() as p:
        _ = (p | stream | beam.Map(lambda x: ("mykey", x)) | beam.ParDo(_ThreeTimersDoFn())
             | beam.ParDo(_ReifyTimestamp()) | _record(records_file))
    assert sorted(_records(records_file)) == [("timer1", 10), ("timer2", 20), ("timer3", 30)]


class _TimerWindowDoFn(DoFn):
    EMIT_TIMER_1 = TimerSpec("emit1", TimeDomain.WATERMARK)

    def process(self, element: Any, timer1: Any = DoFn.TimerParam(EMIT_TIMER_1)) -> None:
        timer1.set(10)

    @on_timer(EMIT_TIMER_1)
    def emit_callback_1(self, window: Any = DoFn.WindowParam, ts: Any = DoFn.TimestampParam,
                        key: Any = DoFn.KeyParam) -> Iterator[tuple[str, int, int, int]]:
        yield ("timer1-{key}".format(key=key), int(ts), int(window.start), int(window.end))


def test_timer_output_timestamp_and_window(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_timer_output_timestamp_and_window
    # (built with explicit PipelineOptions(), i.e. the DirectRunner, there).
    stream = TestStream().advance_watermark_to(10).add_elements([1])
    with _pipeline() as p:
        _ = (p | stream | beam.Map(lambda x: ("mykey", x))
             | "window_into" >> beam.WindowInto(window.FixedWindows(5),
                                                accumulation_mode=trigger.AccumulationMode.DISCARDING)
             | beam.ParDo(_TimerWindowDoFn()) | _record(records_file))
    assert sorted(_records(records_file)) == [("timer1-mykey", 10, 10, 15)]


class _DefaultTagDoFn(DoFn):
    EMIT_TIMER_FAMILY = TimerSpec("emit", TimeDomain.WATERMARK)

    def process(self, element: Any, emit: Any = DoFn.TimerParam(EMIT_TIMER_FAMILY)) -> None:
        emit.set(10)
        emit.set(20, dynamic_timer_tag="")

    @on_timer(EMIT_TIMER_FAMILY)
    def emit_callback(self, ts: Any = DoFn.TimestampParam,
                      tag: Any = DoFn.DynamicTimerTagParam) -> Iterator[tuple[str, Any]]:
        yield (tag, ts)


def _one_element_stream(at: int) -> TestStream:
    return TestStream().advance_watermark_to(at).add_elements([1]).advance_watermark_to_infinity()


def test_timer_default_tag(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_timer_default_tag
    with _pipeline() as p:
        _ = (p | _one_element_stream(10) | beam.Map(lambda x: ("mykey", x)) | beam.ParDo(_DefaultTagDoFn())
             | _record(records_file))
    assert sorted(_records(records_file)) == [("", 20)]


class _DynamicTimerDoFn(DoFn):
    EMIT_TIMER_FAMILY = TimerSpec("emit", TimeDomain.WATERMARK)

    def process(self, element: Any, emit: Any = DoFn.TimerParam(EMIT_TIMER_FAMILY)) -> None:
        emit.set(10, dynamic_timer_tag="emit1")
        emit.set(20, dynamic_timer_tag="emit2")
        emit.set(30, dynamic_timer_tag="emit3")

    @on_timer(EMIT_TIMER_FAMILY)
    def emit_callback(self, ts: Any = DoFn.TimestampParam,
                      tag: Any = DoFn.DynamicTimerTagParam) -> Iterator[tuple[str, Any]]:
        yield (tag, ts)


def test_dynamic_timer_simple_dofn(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_dynamic_timer_simple_dofn
    with _pipeline() as p:
        _ = (p | _one_element_stream(10) | beam.Map(lambda x: ("mykey", x)) | beam.ParDo(_DynamicTimerDoFn())
             | _record(records_file))
    assert sorted(_records(records_file)) == [("emit1", 10), ("emit2", 20), ("emit3", 30)]


class _EmitTwoEvents(DoFn):
    EMIT_CLEAR_SET_TIMER = TimerSpec("emitclear", TimeDomain.WATERMARK)

    def process(self, element: Any, emit: Any = DoFn.TimerParam(EMIT_CLEAR_SET_TIMER)) -> Iterator[tuple[str, str]]:
        yield ("1", "set")
        emit.set(1)

    @on_timer(EMIT_CLEAR_SET_TIMER)
    def emit_clear(self) -> Iterator[tuple[str, str]]:
        yield ("1", "clear")


class _ClearThenSetDoFn(DoFn):
    EMIT_TIMER_FAMILY = TimerSpec("emit", TimeDomain.WATERMARK)

    def process(self, element: Any, emit: Any = DoFn.TimerParam(EMIT_TIMER_FAMILY)) -> list[Any]:
        if element[1] == "set":
            emit.set(10, dynamic_timer_tag="emit1")
            emit.set(20, dynamic_timer_tag="emit2")
        if element[1] == "clear":
            emit.set(30, dynamic_timer_tag="emit3")
            emit.clear(dynamic_timer_tag="emit3")
            emit.set(40, dynamic_timer_tag="emit3")
        return []

    @on_timer(EMIT_TIMER_FAMILY)
    def emit_callback(self, ts: Any = DoFn.TimestampParam,
                      tag: Any = DoFn.DynamicTimerTagParam) -> Iterator[tuple[str, Any]]:
        yield (tag, ts)


def test_dynamic_timer_clear_then_set_timer() -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_dynamic_timer_clear_then_set_timer
    # (a bounded Create in Beam's test; run here in --streaming mode).
    with _pipeline() as p:
        res = (p | beam.Create([("1", "impulse")]) | beam.ParDo(_EmitTwoEvents())
               | beam.ParDo(_ClearThenSetDoFn()))
        assert_that(res, equal_to([("emit1", 10), ("emit2", 20), ("emit3", 40)]))


class _DynamicClearDoFn(DoFn):
    EMIT_TIMER_FAMILY = TimerSpec("emit", TimeDomain.WATERMARK)

    def process(self, element: Any, emit: Any = DoFn.TimerParam(EMIT_TIMER_FAMILY)) -> None:
        if element[1] == "set":
            emit.set(10, dynamic_timer_tag="emit1")
            emit.set(20, dynamic_timer_tag="emit2")
            emit.set(30, dynamic_timer_tag="emit3")
        if element[1] == "clear":
            emit.clear(dynamic_timer_tag="emit3")

    @on_timer(EMIT_TIMER_FAMILY)
    def emit_callback(self, ts: Any = DoFn.TimestampParam,
                      tag: Any = DoFn.DynamicTimerTagParam) -> Iterator[tuple[str, Any]]:
        yield (tag, ts)


def test_dynamic_timer_clear_timer(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_dynamic_timer_clear_timer
    stream = (TestStream().advance_watermark_to(5).add_elements(["set"])
              .advance_watermark_to(10).add_elements(["clear"])
              .advance_watermark_to_infinity())  # yapf: disable
    with _pipeline() as p:
        _ = (p | stream | beam.Map(lambda x: ("mykey", x)) | beam.ParDo(_DynamicClearDoFn())
             | _record(records_file))
    assert sorted(_records(records_file)) == [("emit1", 10), ("emit2", 20)]


class _TwoFamiliesDoFn(DoFn):
    EMIT_TIMER_FAMILY1 = TimerSpec("emit_family_1", TimeDomain.WATERMARK)
    EMIT_TIMER_FAMILY2 = TimerSpec("emit_family_2", TimeDomain.WATERMARK)

    def process(self, element: Any, emit1: Any = DoFn.TimerParam(EMIT_TIMER_FAMILY1),
                emit2: Any = DoFn.TimerParam(EMIT_TIMER_FAMILY2)) -> None:
        emit1.set(10, dynamic_timer_tag="emit11")
        emit1.set(20, dynamic_timer_tag="emit12")
        emit1.set(30, dynamic_timer_tag="emit13")
        emit2.set(30, dynamic_timer_tag="emit21")
        emit2.set(20, dynamic_timer_tag="emit22")
        emit2.set(10, dynamic_timer_tag="emit23")

    @on_timer(EMIT_TIMER_FAMILY1)
    def emit_callback(self, ts: Any = DoFn.TimestampParam,
                      tag: Any = DoFn.DynamicTimerTagParam) -> Iterator[tuple[str, Any]]:
        yield (tag, ts)

    @on_timer(EMIT_TIMER_FAMILY2)
    def emit_callback_2(self, ts: Any = DoFn.TimestampParam,
                        tag: Any = DoFn.DynamicTimerTagParam) -> Iterator[tuple[str, Any]]:
        yield (tag, ts)


def test_dynamic_timer_multiple(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_dynamic_timer_multiple
    with _pipeline() as p:
        _ = (p | _one_element_stream(5) | beam.Map(lambda x: ("mykey", x)) | beam.ParDo(_TwoFamiliesDoFn())
             | _record(records_file))
    assert sorted(_records(records_file)) == [("emit11", 10), ("emit12", 20), ("emit13", 30),
                                              ("emit21", 30), ("emit22", 20), ("emit23", 10)]


class _DynamicAndSimpleTimerDoFn(DoFn):
    EMIT_TIMER_FAMILY = TimerSpec("emit", TimeDomain.WATERMARK)
    GC_TIMER = TimerSpec("gc", TimeDomain.WATERMARK)

    def process(self, element: Any, emit: Any = DoFn.TimerParam(EMIT_TIMER_FAMILY),
                gc: Any = DoFn.TimerParam(GC_TIMER)) -> None:
        emit.set(10, dynamic_timer_tag="emit1")
        emit.set(20, dynamic_timer_tag="emit2")
        emit.set(30, dynamic_timer_tag="emit3")
        gc.set(40)

    @on_timer(EMIT_TIMER_FAMILY)
    def emit_callback(self, ts: Any = DoFn.TimestampParam,
                      tag: Any = DoFn.DynamicTimerTagParam) -> Iterator[tuple[str, Any]]:
        yield (tag, ts)

    @on_timer(GC_TIMER)
    def gc(self, ts: Any = DoFn.TimestampParam) -> Iterator[tuple[str, Any]]:
        yield ("gc", ts)


def test_dynamic_timer_and_simple_timer(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_dynamic_timer_and_simple_timer
    with _pipeline() as p:
        _ = (p | _one_element_stream(5) | beam.Map(lambda x: ("mykey", x))
             | beam.ParDo(_DynamicAndSimpleTimerDoFn()) | _record(records_file))
    assert sorted(_records(records_file)) == [("emit1", 10), ("emit2", 20), ("emit3", 30), ("gc", 40)]


# ---------------------------------------------------------------------------
# Stateful DoFns without timers, and with a timer cleared by an element.
# ---------------------------------------------------------------------------


class _IndexAssigningDoFn(DoFn):
    INDEX_STATE = CombiningValueStateSpec("index", sum)

    def process(self, element: Any, state: Any = DoFn.StateParam(INDEX_STATE)) -> Iterator[tuple[Any, int]]:
        unused_key, value = element
        current_index = state.read()
        yield (value, current_index)
        state.add(1)


def test_index_assignment(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_index_assignment
    stream = (TestStream().advance_watermark_to(10).add_elements(["A", "B"]).add_elements(["C"])
              .advance_watermark_to(25).add_elements(["D"]))  # yapf: disable
    with _pipeline() as p:
        _ = (p | stream | beam.Map(lambda x: ("mykey", x)) | beam.ParDo(_IndexAssigningDoFn())
             | _record(records_file))
    assert _records(records_file) == [("A", 0), ("B", 1), ("C", 2), ("D", 3)]


class _HashJoinDoFn(DoFn):
    BUFFER_STATE = BagStateSpec("buffer", BytesCoder())
    UNMATCHED_TIMER = TimerSpec("unmatched", TimeDomain.WATERMARK)

    def process(self, element: Any, state: Any = DoFn.StateParam(BUFFER_STATE),
                timer: Any = DoFn.TimerParam(UNMATCHED_TIMER)) -> Iterator[bytes]:
        key, value = element
        existing_values = list(state.read())
        if not existing_values:
            state.add(value)
            timer.set(100)
        else:
            yield b"Record<%s,%s,%s>" % (key, existing_values[0], value)
            state.clear()
            timer.clear()

    @on_timer(UNMATCHED_TIMER)
    def expiry_callback(self, state: Any = DoFn.StateParam(BUFFER_STATE)) -> Iterator[bytes]:
        buffered = list(state.read())
        assert len(buffered) == 1, buffered
        state.clear()
        yield b"Unmatched<%s>" % (buffered[0],)


def test_hash_join(records_file: Path) -> None:
    # apache_beam/transforms/userstate_test.py::StatefulDoFnOnDirectRunnerTest::test_hash_join
    stream = (TestStream().advance_watermark_to(10).add_elements([(b"A", b"a"), (b"B", b"b")])
              .add_elements([(b"A", b"aa"), (b"C", b"c")])
              .advance_watermark_to(25).add_elements([(b"A", b"aaa"), (b"B", b"bb")])
              .add_elements([(b"D", b"d"), (b"D", b"dd"), (b"D", b"ddd"), (b"D", b"dddd")])
              .advance_watermark_to(125).add_elements([(b"C", b"cc")]))  # yapf: disable
    with _pipeline() as p:
        _ = p | stream | beam.ParDo(_HashJoinDoFn()) | _record(records_file)
    # Beam checks this one as a multiset (equal_to).
    equal_to(_records(records_file))([
        b"Record<A,a,aa>",
        b"Record<B,b,bb>",
        b"Record<D,d,dd>",
        b"Record<D,ddd,dddd>",
        b"Unmatched<aaa>",
        b"Unmatched<c>",
        b"Unmatched<cc>",
    ])


def test_every_streaming_test_of_beams_class_is_ported() -> None:
    """Each test of Beam's class has a port here naming it."""
    import inspect  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    from apache_beam.transforms import userstate_test  # pylint: disable=import-outside-toplevel

    beams: Sequence[str] = [n for n in dir(userstate_test.StatefulDoFnOnDirectRunnerTest) if n.startswith("test_")]
    here = inspect.getsource(sys.modules[__name__])
    missing = [n for n in beams if "%s%s\n" % (SOURCE, n) not in here or "def %s(" % n not in here]
    assert len(beams) >= 22 and not missing, missing
