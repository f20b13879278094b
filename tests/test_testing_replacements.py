"""ferrobeam.testing: replacements, captures and their errors.

The happy paths on a realistic pipeline are in examples/pricing/tests; these
tests cover each way a replacement can go wrong (with the message checked),
URN and glob matching, windowed list elements, custom file formats, and
Beam's TestPipeline / assert_that inside a replaced pipeline.
"""

from __future__ import annotations

import typing
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.coders import StrUtf8Coder
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from ferrobeam.testing import ReplacementError, Replacements

RUNNER = ["--runner=ferrobeam.FerrobeamRunner"]


def production(p: beam.Pipeline) -> None:
    """A small 'production' pipeline: typed source, two sinks, a composite."""
    counts = (p
              | "ReadEvents" >> beam.io.ReadFromText("/nowhere/events-*.txt", validate=False)
              .with_output_types(str)
              | "Parse" >> beam.Map(lambda line: (line.split(",")[0], int(line.split(",")[1])))
              .with_output_types(typing.Tuple[str, int])
              | "Window" >> beam.WindowInto(window.FixedWindows(10))
              | "Sum" >> beam.CombinePerKey(sum))  # yapf: disable
    _ = counts | "WriteTotals" >> beam.io.WriteToText("/nowhere/totals")
    _ = counts | "WriteAudit" >> beam.io.WriteToText("/nowhere/audit")


def run_production(args: list[str] = RUNNER) -> None:
    with beam.Pipeline(options=PipelineOptions(args)) as p:
        production(p)


def apply_only(replacements: Replacements) -> beam.Pipeline:
    """Builds the production pipeline and applies the replacements, without running it."""
    p = beam.Pipeline(options=PipelineOptions(RUNNER))
    production(p)
    replacements.apply(p)
    return p


def test_a_name_that_matches_nothing_names_the_close_candidates():
    r = Replacements()
    r.source("ReadEvent", elements=["a,1"])
    with pytest.raises(ReplacementError) as err:
        apply_only(r)
    assert "matches no transform; did you mean 'ReadEvents'" in str(err.value)
    assert "(top-level transforms: 'Parse', 'ReadEvents', 'Sum', 'Window', 'WriteAudit', 'WriteTotals')" in str(
        err.value)


def test_a_urn_that_matches_nothing_lists_the_pipeline_urns():
    r = Replacements()
    r.capture(urn="beam:transform:org.apache.beam:kafka_write:v1")
    with pytest.raises(ReplacementError) as err:
        apply_only(r)
    assert "matches no transform" in str(err.value)
    assert "beam:transform:pardo:v1" in str(err.value)


def test_a_glob_meant_for_one_transform_that_matches_two_names_both():
    r = Replacements()
    r.capture("Write*")
    with pytest.raises(ReplacementError, match=r"matches 2 transforms: 'WriteAudit', 'WriteTotals'.*many=True"):
        apply_only(r)


def test_two_replacements_for_one_transform_are_refused():
    r = Replacements()
    r.capture("WriteTotals")
    r.capture("Write*", many=True)
    with pytest.raises(ReplacementError, match=r"'WriteTotals' is matched by two replacements"):
        apply_only(r)


def test_a_source_replacement_for_a_transform_that_reads_input_is_refused():
    r = Replacements()
    r.source("Parse", elements=[("a", 1)])
    with pytest.raises(ReplacementError, match=r"'Parse' is not a source"):
        apply_only(r)


def test_list_elements_the_source_coder_cannot_encode_are_refused():
    r = Replacements()
    r.source("ReadEvents", elements=["a,1", 7])
    with pytest.raises(ReplacementError) as err:
        apply_only(r)
    assert "element #1 (7)" in str(err.value)
    assert "StrUtf8Coder" in str(err.value)


def test_a_replacement_of_another_type_is_refused_with_both_types():
    r = Replacements()
    r.transform("Parse", beam.Map(lambda line: line.upper()).with_output_types(str))
    with pytest.raises(ReplacementError) as err:
        apply_only(r)
    message = str(err.value)
    assert "'Parse' produces main output of type str (coder StrUtf8Coder)" in message
    assert "the replaced transform's output is Tuple[str, int]" in message


def test_a_test_stream_with_its_own_incompatible_coder_is_refused():
    r = Replacements()
    r.source("ReadEvents", test_stream=BeamTestStream(coder=beam.coders.VarIntCoder()).add_elements([1]))
    with pytest.raises(ReplacementError, match=r"encodes with VarIntCoder.*decode StrUtf8Coder"):
        apply_only(r)


def test_replacements_that_never_reach_ferrobeam_fail_the_block():
    r = Replacements()
    r.source("ReadEvents", elements=["a,1"])
    with pytest.raises(ReplacementError, match="no pipeline ran on ferrobeam"):
        with r:
            pass


@pytest.mark.parametrize("spec, message", [
    ("ReadEvents", "expected TARGET=KIND:ARG"),
    ("ReadEvents=csv:/x", "expected TARGET=KIND:ARG"),
    ("ReadEvents=elements:{", "wants a JSON array"),
    ("WriteTotals=capture:/x;timestamp=ts", "only jsonl: and text:"),
])
def test_malformed_replace_options_are_refused(spec, message):
    with pytest.raises(ReplacementError, match=message):
        run_production(RUNNER + ["--ferrobeam_replace", spec])


def test_windowed_and_timestamped_list_elements_keep_their_windows(tmp_path: Path):
    r = Replacements(directory=str(tmp_path))
    r.source("ReadEvents", elements=[
        window.TimestampedValue("a,1", 3),
        window.TimestampedValue("a,2", 4),
        WindowedValue("b,5", Timestamp(12), [window.IntervalWindow(10, 20)]),
    ])
    totals = r.capture("WriteTotals")
    audit = r.capture("WriteAudit")
    with r:
        run_production()
    assert sorted(totals.panes()) == sorted([
        (window.IntervalWindow(0, 10), "ON_TIME", ("a", 3)),
        (window.IntervalWindow(10, 20), "ON_TIME", ("b", 5)),
    ])
    assert sorted(audit.timestamped()) == [(("a", 3), 9.999), (("b", 5), 19.999)]


def test_a_custom_file_format_with_event_times(tmp_path: Path):
    data = tmp_path / "events.csv"
    data.write_text("a|1|3.5\nb|2|15\na|4|5\n")
    r = Replacements(directory=str(tmp_path / "captures"))
    r.source("ReadEvents", path=str(data), parse=lambda line: "%s,%s" % tuple(line.split("|")[:2]),
             timestamp=lambda record: {"a,1": 3.5, "b,2": 15, "a,4": 5}[record])
    totals = r.capture("WriteTotals")
    r.capture("WriteAudit")
    with r:
        run_production()
    assert sorted(totals.by_window().items()) == [
        (window.IntervalWindow(0, 10), [("a", 5)]), (window.IntervalWindow(10, 20), [("b", 2)])]


def test_urn_and_glob_matching(tmp_path: Path):
    r = Replacements(directory=str(tmp_path))
    # The outermost beam:transform:read:v1 is ReadEvents/Read, inside ReadEvents.
    r.source(urn="beam:transform:read:v1", elements=["a,1", "b,2"])
    both = r.capture("Write*", many=True)
    with r:
        run_production()
    assert sorted(both.values()) == [("a", 1), ("a", 1), ("b", 2), ("b", 2)]


def run_doubling_test_pipeline(tmp_path: Path, expected: list[int]) -> None:
    """A TestPipeline asserting on a replaced source's doubled numbers."""
    r = Replacements(directory=str(tmp_path))
    r.source("Numbers", elements=["1", "2", "3"])
    with r:
        with BeamTestPipeline(options=PipelineOptions(RUNNER)) as p:
            doubled = (p
                       | "Numbers" >> beam.io.ReadFromText("/nowhere/n.txt", validate=False)
                       | "Double" >> beam.Map(lambda x: 2 * int(x)))  # yapf: disable
            assert_that(doubled, equal_to(expected))


def test_assert_that_keeps_working_in_a_replaced_test_pipeline(tmp_path: Path):
    run_doubling_test_pipeline(tmp_path, [2, 4, 6])


def test_a_failing_assert_that_still_fails(tmp_path: Path):
    with pytest.raises(Exception, match="Failed assert"):
        run_doubling_test_pipeline(tmp_path, [2, 4, 7])


def test_a_streaming_capture_records_each_pane(tmp_path: Path):
    events = (BeamTestStream(coder=StrUtf8Coder())
              .add_elements([window.TimestampedValue("a,1", 1)])
              .advance_watermark_to(10)
              .advance_processing_time(60)
              .add_elements([window.TimestampedValue("a,2", 12)])
              .advance_watermark_to_infinity())  # yapf: disable
    r = Replacements(directory=str(tmp_path))
    r.source("ReadEvents", test_stream=events)
    totals = r.capture("WriteTotals")
    r.capture("WriteAudit")
    with r:
        run_production(RUNNER + ["--streaming"])
    assert totals.panes() == [
        (window.IntervalWindow(0, 10), "ON_TIME", ("a", 1)),
        (window.IntervalWindow(10, 20), "ON_TIME", ("a", 2)),
    ]
    assert [record.is_last for record in totals.records()] == [True, True]


def test_a_capture_can_be_read_while_a_streaming_job_runs(tmp_path: Path):
    from apache_beam.runners.runner import PipelineState
    from apache_beam.transforms.periodicsequence import PeriodicImpulse

    r = Replacements(directory=str(tmp_path))
    ticks = r.capture("Publish")
    with r:
        p = beam.Pipeline(options=PipelineOptions(RUNNER + ["--streaming"]))
        _ = (p
             | "Ticks" >> PeriodicImpulse(fire_interval=0.2, stop_timestamp=Timestamp.now() + 600)
             | "Number" >> beam.Map(lambda t: int(float(t) * 5))
             | "Publish" >> beam.Map(print))  # yapf: disable
        result = p.run()
        try:
            seen = ticks.wait_for(3, timeout=120)
            assert result.state == PipelineState.RUNNING
            assert len(seen) >= 3 and len({record.value for record in seen}) == len(seen)
        finally:
            result.drain()
            result.wait_until_finish()
        assert result.state == PipelineState.DRAINED
        assert len(ticks.records()) >= len(seen)


def kafka_production(p: beam.Pipeline) -> None:
    """A pipeline built with Beam's own Kafka transforms, pointing at nothing."""
    from apache_beam.io.kafka import ReadFromKafka, WriteToKafka

    nowhere = "127.0.0.1:9"  # discard port: nothing answers there
    _ = (p
         | "ReadRides" >> ReadFromKafka(consumer_config={"bootstrap.servers": nowhere}, topics=["rides"],
                                        expansion_service=nowhere)
         | "Upper" >> beam.Map(lambda kv: (kv[0], kv[1].upper())).with_output_types(typing.Tuple[bytes, bytes])
         | "WritePrices" >> WriteToKafka(producer_config={"bootstrap.servers": nowhere}, topic="prices",
                                         expansion_service=nowhere))  # yapf: disable


def test_kafka_transforms_are_replaced_without_a_broker_or_expansion_service(tmp_path: Path):
    r = Replacements(directory=str(tmp_path))
    r.source("ReadRides", elements=[(b"k1", b"ride"), (b"k2", b"drive")])
    prices = r.capture(urn="beam:transform:org.apache.beam:kafka_write:v1")
    with r:
        with beam.Pipeline(options=PipelineOptions(RUNNER)) as p:
            kafka_production(p)
    assert sorted(prices.values()) == [(b"k1", b"RIDE"), (b"k2", b"DRIVE")]


def test_a_kafka_source_replacement_must_produce_key_value_bytes(tmp_path: Path):
    r = Replacements(directory=str(tmp_path))
    r.source("ReadRides", elements=["not bytes"])
    r.capture("WritePrices")
    with pytest.raises(ReplacementError, match=r"element #0 \('not bytes'\)"):
        with r:
            with beam.Pipeline(options=PipelineOptions(RUNNER)) as p:
                kafka_production(p)


def test_kafka_transforms_no_rule_names_are_still_expanded(tmp_path: Path):
    r = Replacements(directory=str(tmp_path))
    r.source("ReadRides", elements=[(b"k", b"v")])
    # WriteToKafka is not replaced, so Beam asks its expansion service, which is not there.
    with pytest.raises(Exception, match="127.0.0.1:9"):
        with r:
            with beam.Pipeline(options=PipelineOptions(RUNNER)) as p:
                kafka_production(p)
