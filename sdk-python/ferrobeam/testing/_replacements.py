"""Replacing transforms of a pipeline under test, at submission time.

A test says what to replace (a source by a list, a file or a TestStream; a
sink by a capture; any transform by a PTransform of its own) and runs the
production pipeline code unchanged. :class:`ferrobeam.FerrobeamRunner`
applies the replacements to the pipeline it is given, before translating
it, so the code under test is exactly the code that ships.

Matching happens on the pipeline's Runner API form: a transform's unique
name (what Beam calls its full label, e.g. ``"Parse/Map(decode)"``), matched
exactly or as a glob, or its URN. When a composite and its parts both
match, the composite (outermost) is meant. Anything that would make the run
meaningless fails before the run with a :class:`ReplacementError` naming
the candidates: a rule that matches nothing, a rule meant for one
transform that matches several, two rules for one transform, and a
replacement whose output would be encoded with another coder than the
replaced transform's consumers use.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

import apache_beam as beam
from apache_beam import coders, pvalue
from apache_beam.typehints.typehints import is_consistent_with
from apache_beam.pipeline import AppliedPTransform, Pipeline, PipelineVisitor, PTransformOverride
from apache_beam.testing.test_stream import ElementEvent, TestStream

from ferrobeam.testing import _external
from ferrobeam.testing._capture import Capture, CaptureSink
from ferrobeam.testing._sources import FileSource, ListSource, TimestampSpec

__all__ = ["Replacements", "ReplacementError", "active_replacements", "apply_replacements",
           "apply_for_run", "from_option_specs"]

_GLOB_CHARS = frozenset("*?[")


class ReplacementError(ValueError):
    """A replacement cannot be applied; raised before the pipeline runs."""


@dataclass(frozen=True)
class Match:
    """Which transforms a rule replaces: by unique name (or glob) or by URN."""

    name: Optional[str] = None
    urn: Optional[str] = None
    many: bool = False

    def __post_init__(self) -> None:
        if (self.name is None) == (self.urn is None):
            raise ValueError("give exactly one of a transform name (or glob) and a URN")

    def describe(self) -> str:
        if self.urn is not None:
            return "URN %r" % self.urn
        kind = "glob" if self.is_glob else "name"
        return "%s %r" % (kind, self.name)

    @property
    def is_glob(self) -> bool:
        return self.name is not None and bool(_GLOB_CHARS & set(self.name))

    def selects(self, unique_name: str, urn: str) -> bool:
        if self.urn is not None:
            return urn == self.urn
        assert self.name is not None
        if self.is_glob:
            return fnmatch.fnmatchcase(unique_name, self.name)
        return unique_name == self.name


#: Builds a rule's replacement for one matched transform.
Builder = Callable[[AppliedPTransform, "_Rule"], beam.PTransform]


@dataclass
class _Rule:
    match: Match
    kind: str  # "source", "capture" or "transform": used in messages
    build: Builder
    # Values the replacement will emit, checked against the replaced output's
    # coder before the run (list and TestStream sources).
    values: Optional[Sequence[Any]] = None


@dataclass(frozen=True)
class _TransformInfo:
    unique_name: str
    urn: str
    parent: Optional[str]
    inputs: tuple[str, ...]


class Replacements:
    """A set of replacements for the pipelines run while it is active.

    Use it as a context manager around the code that builds and runs the
    production pipeline with ``--runner=ferrobeam.FerrobeamRunner``::

        replacements = Replacements()
        replacements.source("ReadRides", jsonl="tests/rides.jsonl", timestamp="ts")
        prices = replacements.capture("WritePrices")
        with replacements:
            pricing.run(["--runner=ferrobeam.FerrobeamRunner"])
        assert prices.values() == [...]

    Leaving the block raises :class:`ReplacementError` if no pipeline ran
    on ferrobeam meanwhile: a test whose replacements were never applied
    tested the production connectors instead.

    Args:
      directory: Where captures write (a fresh temporary directory if
        omitted, removed by :meth:`close`). The SDK workers write there, so
        it must be on this machine.
    """

    def __init__(self, directory: Optional[str] = None) -> None:
        self._directory = directory
        self._owns_directory = directory is None
        self._rules: list[_Rule] = []
        self._runs = 0

    @property
    def directory(self) -> str:
        """Where :meth:`capture` puts its captures (created on first use)."""
        if self._directory is None:
            self._directory = tempfile.mkdtemp(prefix="ferrobeam-captures-")
        return self._directory

    # -- declaring rules --------------------------------------------------

    def source(self, name: Optional[str] = None, *, urn: Optional[str] = None, many: bool = False,
               elements: Optional[Iterable[Any]] = None, jsonl: Optional[str] = None,
               text: Optional[str] = None, path: Optional[str] = None,
               parse: Optional[Callable[[str], Any]] = None, timestamp: TimestampSpec = None,
               test_stream: Optional[TestStream] = None) -> None:
        """Replaces a source with elements given here.

        Give exactly one of:

        * ``elements``: values, ``TimestampedValue``s or ``WindowedValue``s;
        * ``jsonl`` / ``text``: a file of JSON lines / text lines;
        * ``path`` with ``parse``: a file in a format of your own, one record per line;
        * ``test_stream``: a :class:`apache_beam.testing.test_stream.TestStream`
          (run with ``--streaming``).

        ``timestamp`` (files only) names the field, or gives the function,
        that yields each record's event time.
        """
        given = [x for x in (elements, jsonl, text, path, test_stream) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of elements=, jsonl=, text=, path= (with parse=) and test_stream=")
        if path is not None and parse is None:
            raise ValueError("path= needs parse=, a function from one line to a record")
        if timestamp is not None and (elements is not None or test_stream is not None):
            raise ValueError("timestamp= is for files; give elements as TimestampedValue, "
                             "or timestamps in the TestStream's events")
        match = Match(name, urn, many)
        if elements is not None:
            items = list(elements)
            self._rules.append(_Rule(match, "source", lambda applied, rule: ListSource(items),
                                     values=[ListSource.value_of(e) for e in items]))
        elif test_stream is not None:
            values = [tv.value for e in test_stream._events if isinstance(e, ElementEvent)  # pylint: disable=protected-access
                      for tv in e.timestamped_values]
            self._rules.append(_Rule(match, "source", _test_stream_builder(test_stream), values=values))
        else:
            file_path = jsonl or text or path
            assert file_path is not None
            fmt = "jsonl" if jsonl is not None else "text"
            self._rules.append(_Rule(match, "source",
                                     lambda applied, rule: FileSource(file_path, fmt, parse, timestamp)))

    def capture(self, name: Optional[str] = None, *, urn: Optional[str] = None, many: bool = False) -> Capture:
        """Replaces a sink with a capture and returns it, to read during or after the run."""
        return self.capture_into(os.path.join(self.directory, "capture-%d" % len(self._rules)), name,
                                 urn=urn, many=many)

    def capture_into(self, directory: str, name: Optional[str] = None, *, urn: Optional[str] = None,
                     many: bool = False) -> Capture:
        """Like :meth:`capture`, writing into ``directory`` (which the caller owns)."""
        match = Match(name, urn, many)
        capture = Capture(match.name or match.urn or "", directory)
        self._rules.append(_Rule(match, "capture", _capture_builder(directory)))
        return capture

    def transform(self, name: Optional[str] = None, replacement: Optional[beam.PTransform] = None, *,
                  urn: Optional[str] = None, many: bool = False) -> None:
        """Replaces any transform with ``replacement``, applied to the same inputs.

        Its outputs must carry the replaced transform's output tags, and
        their elements must use the same coders.
        """
        if not isinstance(replacement, beam.PTransform):
            raise ValueError("replacement must be a beam.PTransform, got %r" % (replacement,))
        self._rules.append(_Rule(Match(name, urn, many), "transform", lambda applied, rule: replacement))

    # -- activation -------------------------------------------------------

    def __enter__(self) -> "Replacements":
        _external.install(_will_replace)
        with _ACTIVE_LOCK:
            _ACTIVE.append(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        with _ACTIVE_LOCK:
            _ACTIVE.remove(self)
        if exc_type is None and self._rules and self._runs == 0:
            raise ReplacementError(
                "no pipeline ran on ferrobeam while these replacements were active, so none was "
                "applied (%s); run the pipeline with --runner=ferrobeam.FerrobeamRunner"
                % "; ".join("%s for %s" % (r.kind, r.match.describe()) for r in self._rules))

    def close(self) -> None:
        """Removes the capture directory, if this object created it."""
        if self._owns_directory and self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def apply(self, pipeline: Pipeline) -> list[str]:
        """Applies every rule to ``pipeline``; returns the replaced transforms' names.

        Raises:
          ReplacementError: If a rule cannot be applied (see the module doc).
        """
        self._runs += 1
        return apply_replacements(pipeline, self._rules)


_ACTIVE: list[Replacements] = []
_ACTIVE_LOCK = threading.Lock()


def active_replacements() -> list[Replacements]:
    """The :class:`Replacements` whose ``with`` block is open, outermost first."""
    with _ACTIVE_LOCK:
        return list(_ACTIVE)


def _will_replace(labels: list[str], urn: str) -> bool:
    """Whether an open block has a rule for a transform (by its or an enclosing label, or its URN)."""
    for replacements in active_replacements():
        for rule in replacements._rules:  # pylint: disable=protected-access
            if rule.match.urn is not None:
                if rule.match.urn == urn:
                    return True
            elif any(rule.match.selects(label, urn) for label in labels):
                return True
    return False


# -- builders ---------------------------------------------------------------


def _capture_builder(directory: str) -> Builder:
    def build(applied: AppliedPTransform, rule: _Rule) -> beam.PTransform:
        inputs = list(applied.main_inputs.values())
        if len(inputs) != 1:
            raise ReplacementError(
                "a capture replaces a sink with one input; %r has %d (%s)"
                % (applied.full_label, len(inputs), ", ".join(str(t) for t in applied.main_inputs) or "none"))
        tags = [tag for tag, out in applied.outputs.items() if not isinstance(out, pvalue.PDone)]
        return CaptureSink(directory, tags)

    return build


def _test_stream_builder(test_stream: TestStream) -> Builder:
    def build(applied: AppliedPTransform, rule: _Rule) -> beam.PTransform:
        wanted = _output_coder(applied)
        if wanted is not None and test_stream.coder != wanted:
            if test_stream.coder != coders.FastPrimitivesCoder():
                raise ReplacementError(
                    "the TestStream replacing %r encodes with %s, but %r's consumers decode %s; "
                    "leave the TestStream's coder unset or give it that coder"
                    % (applied.full_label, test_stream.coder, applied.full_label, wanted))
            # The TestStream's events are encoded with its coder; give it the
            # one the replaced source's consumers decode with.
            test_stream.coder = wanted
        return test_stream

    return build


# -- applying ---------------------------------------------------------------


def _element_type(pcoll: Any) -> Any:
    return getattr(pcoll, "element_type", None)


def _type_name(t: Any) -> str:
    """``Tuple[str, int]`` rather than ``Tuple[<class 'str'>, <class 'int'>]``."""
    return re.sub(r"<class '([\w.]+)'>", r"\1", t.__name__ if isinstance(t, type) else str(t))


def _coder_of(pcoll: Any) -> Optional[coders.Coder]:
    if not isinstance(pcoll, pvalue.PCollection):
        return None
    element_type = _element_type(pcoll)
    return coders.registry.get_coder(element_type if element_type is not None else beam.typehints.Any)


def _output_coder(applied: AppliedPTransform) -> Optional[coders.Coder]:
    outputs = [o for o in applied.outputs.values() if isinstance(o, pvalue.PCollection)]
    return _coder_of(outputs[0]) if len(outputs) == 1 else None


def _transforms(pipeline: Pipeline) -> dict[str, _TransformInfo]:
    proto = pipeline.to_runner_api()
    # The pipeline's own root is a transform without a URN or a real name;
    # its parts are the top-level transforms.
    by_id = {tid: t for tid, t in proto.components.transforms.items() if t.spec.urn}
    parents: dict[str, str] = {}
    for tid, t in by_id.items():
        for sub in t.subtransforms:
            parents[sub] = tid
    return {
        t.unique_name: _TransformInfo(t.unique_name, t.spec.urn,
                                      by_id[parents[tid]].unique_name if tid in parents else None,
                                      tuple(sorted(t.inputs)))
        for tid, t in by_id.items() if t.unique_name
    }


def _candidates(match: Match, transforms: dict[str, _TransformInfo]) -> list[str]:
    hits = {n for n, info in transforms.items() if match.selects(n, info.urn)}

    def has_matched_ancestor(name: str) -> bool:
        parent = transforms[name].parent
        while parent is not None:
            if parent in hits:
                return True
            parent = transforms[parent].parent
        return False

    return sorted(n for n in hits if not has_matched_ancestor(n))


def _no_match_message(rule: _Rule, transforms: dict[str, _TransformInfo]) -> str:
    if rule.match.urn is not None:
        urns = sorted({info.urn for info in transforms.values() if info.urn})
        return "%s replacement for %s matches no transform; the pipeline's URNs are: %s" % (
            rule.kind, rule.match.describe(), ", ".join(urns))
    assert rule.match.name is not None
    close = difflib.get_close_matches(rule.match.name, list(transforms), n=5, cutoff=0.4)
    top = sorted(n for n, info in transforms.items() if info.parent is None)
    hint = ("; did you mean %s?" % ", ".join(repr(c) for c in close)) if close else ""
    return "%s replacement for %s matches no transform%s (top-level transforms: %s)" % (
        rule.kind, rule.match.describe(), hint, ", ".join(repr(t) for t in top))


def _resolve(rules: Sequence[_Rule], transforms: dict[str, _TransformInfo]) -> dict[str, _Rule]:
    chosen: dict[str, _Rule] = {}
    for rule in rules:
        names = _candidates(rule.match, transforms)
        if not names:
            raise ReplacementError(_no_match_message(rule, transforms))
        if len(names) > 1 and not rule.match.many:
            raise ReplacementError(
                "%s replacement for %s matches %d transforms: %s; name one, or pass many=True "
                "to replace them all" % (rule.kind, rule.match.describe(), len(names),
                                         ", ".join(repr(n) for n in names)))
        for name in names:
            if rule.kind == "source" and transforms[name].inputs:
                raise ReplacementError(
                    "%r is not a source (it reads input %s); replace it with transform=, or replace "
                    "the source it reads" % (name, ", ".join(repr(i) for i in transforms[name].inputs)))
            if name in chosen:
                raise ReplacementError("%r is matched by two replacements: %s for %s and %s for %s" % (
                    name, chosen[name].kind, chosen[name].match.describe(), rule.kind, rule.match.describe()))
            for other in chosen:
                if other.startswith(name + "/") or name.startswith(other + "/"):
                    raise ReplacementError("replacements for %r and %r overlap: one is inside the other"
                                           % (other, name))
            chosen[name] = rule
    return chosen


class _Override(PTransformOverride):
    def __init__(self, chosen: dict[str, _Rule]) -> None:
        self._chosen = chosen
        self.original_outputs: dict[str, dict[Optional[str], Any]] = {}

    def matches(self, applied_ptransform: AppliedPTransform) -> bool:
        return applied_ptransform.full_label in self._chosen and \
            applied_ptransform.full_label not in self.original_outputs

    def get_replacement_transform_for_applied_ptransform(self, applied_ptransform: AppliedPTransform) -> Any:
        name = applied_ptransform.full_label
        rule = self._chosen[name]
        self.original_outputs[name] = dict(applied_ptransform.outputs)
        replacement = rule.build(applied_ptransform, rule)
        outputs = [o for o in applied_ptransform.outputs.values() if isinstance(o, pvalue.PCollection)]
        if rule.kind == "source" and len(outputs) == 1 and _element_type(outputs[0]) is not None:
            # Sources' outputs keep the replaced source's element type, so
            # consumers decode with the coder they always used.
            replacement = replacement.with_output_types(_element_type(outputs[0]))
        return replacement


def _find_applied(pipeline: Pipeline, names: Iterable[str]) -> dict[str, AppliedPTransform]:
    wanted = set(names)
    found: dict[str, AppliedPTransform] = {}

    class Finder(PipelineVisitor):
        def enter_composite_transform(self, transform_node: AppliedPTransform) -> None:
            self.visit_transform(transform_node)

        def visit_transform(self, transform_node: AppliedPTransform) -> None:
            if transform_node.full_label in wanted:
                found[transform_node.full_label] = transform_node

    pipeline.visit(Finder())
    return found


def _check_values(rule: _Rule, name: str, coder: Optional[coders.Coder]) -> None:
    if rule.values is None or coder is None:
        return
    for i, value in enumerate(rule.values):
        try:
            coder.encode(value)
        except Exception as exn:  # pylint: disable=broad-except
            raise ReplacementError(
                "element #%d (%r) of the source replacing %r cannot be encoded with %s, the coder "
                "%r's consumers decode: %s" % (i, value, name, coder, name, exn)) from exn


def apply_replacements(pipeline: Pipeline, rules: Sequence[_Rule]) -> list[str]:
    """Applies ``rules`` to ``pipeline`` in place (see :meth:`Replacements.apply`)."""
    if not rules:
        return []
    chosen = _resolve(rules, _transforms(pipeline))
    override = _Override(chosen)
    try:
        pipeline.replace_all([override])
    except KeyError as exn:
        raise ReplacementError(
            "a replacement returned outputs the replaced transform does not have (output tag %s); "
            "its outputs must carry the replaced transform's tags" % exn) from exn
    replaced = _find_applied(pipeline, chosen)
    for name, rule in chosen.items():
        before = override.original_outputs.get(name, {})
        after = replaced[name].outputs if name in replaced else {}
        for tag, old in before.items():
            new = after.get(tag)
            if rule.kind == "capture" or not isinstance(old, pvalue.PCollection):
                continue
            old_type, new_type = _element_type(old) or Any, _element_type(new) or Any
            # Consumers were written for the replaced output's type, and
            # typed consumers (a GroupByKey's key coder, a cross-language
            # sink) depend on its coder: the replacement must produce that
            # type or a narrower one.
            if not is_consistent_with(new_type, old_type):
                raise ReplacementError(
                    "the %s replacing %r produces %s output of type %s (coder %s), but the replaced "
                    "transform's output is %s (coder %s), which its consumers expect; make the "
                    "replacement produce %s (e.g. .with_output_types(...))"
                    % (rule.kind, name, "main" if tag is None else repr(tag), _type_name(new_type),
                       _coder_of(new), _type_name(old_type), _coder_of(old), _type_name(old_type)))
        if rule.kind == "source":
            _check_values(rule, name, _output_coder(replaced[name]) if name in replaced else None)
    return sorted(chosen)


# -- the runner's side -------------------------------------------------------


def from_option_specs(specs: Sequence[str]) -> Replacements:
    """Builds replacements from ``--ferrobeam_replace`` values.

    Each is ``TARGET=SPEC``. ``TARGET`` is a transform's unique name or a
    glob (which must match one transform), or ``urn:`` and a URN. ``SPEC`` is
    one of ``jsonl:PATH``, ``text:PATH`` (with ``;timestamp=FIELD`` to take
    event times from a JSON field), ``elements:JSON_ARRAY``, or
    ``capture:DIR`` (read it back with ``ferrobeam.testing.Capture(name, DIR)``).

    Raises:
      ReplacementError: If a value is malformed.
    """
    import json  # pylint: disable=import-outside-toplevel

    kinds = ("jsonl", "text", "elements", "capture")
    replacements = Replacements()
    for spec in specs:
        target, sep, what = spec.partition("=")
        kind, colon, arg = what.partition(":")
        if not sep or not target or not colon or kind not in kinds:
            raise ReplacementError(
                "--ferrobeam_replace %r: expected TARGET=KIND:ARG with KIND one of %s, e.g. "
                "'ReadRides=jsonl:tests/rides.jsonl'" % (spec, ", ".join(kinds)))
        name, urn = (None, target[len("urn:"):]) if target.startswith("urn:") else (target, None)
        arg, _, extra = arg.partition(";")
        timestamp = None
        if extra:
            key, _, timestamp = extra.partition("=")
            if key != "timestamp" or not timestamp or kind not in ("jsonl", "text"):
                raise ReplacementError("--ferrobeam_replace %r: only jsonl: and text: take ';timestamp=FIELD'"
                                       % spec)
        if kind == "capture":
            replacements.capture_into(arg, name, urn=urn)
        elif kind == "elements":
            try:
                elements = json.loads(arg)
            except ValueError as exn:
                raise ReplacementError("--ferrobeam_replace %r: elements: wants a JSON array: %s" % (spec, exn))
            if not isinstance(elements, list):
                raise ReplacementError("--ferrobeam_replace %r: elements: wants a JSON array" % spec)
            replacements.source(name, urn=urn, elements=elements)
        else:
            replacements.source(name, urn=urn, timestamp=timestamp, **{kind: arg})
    return replacements


def apply_for_run(pipeline: Pipeline, option_specs: Optional[Sequence[str]]) -> list[str]:
    """Applies the active :class:`Replacements` and ``--ferrobeam_replace`` to a pipeline about to run.

    Called by :class:`ferrobeam.FerrobeamRunner` before translation.
    """
    sets = active_replacements()
    if option_specs:
        sets.append(from_option_specs(option_specs))
    rules = [rule for r in sets for rule in r._rules]  # pylint: disable=protected-access
    for r in sets:
        r._runs += 1  # pylint: disable=protected-access
    replaced = apply_replacements(pipeline, rules)
    left = _external.unexpanded_transforms(pipeline)
    if left:
        raise ReplacementError(
            "cross-language transforms %s were not expanded because a replacement named them while "
            "they were applied, but no replacement takes their place now; keep the Replacements "
            "block open around both building and running the pipeline" % ", ".join(repr(x) for x in left))
    return replaced
