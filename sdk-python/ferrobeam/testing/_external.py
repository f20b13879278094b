"""Cross-language transforms that a test replaces are never expanded.

Beam expands a cross-language transform (``ReadFromKafka``,
``WriteToKafka``, ...) when it is applied, by calling an expansion service,
which for Kafka means a broker-less test would still need Java or a running
service. While a :class:`ferrobeam.testing.Replacements` block is open, an
external transform that one of its rules will replace (by its own unique
name, an enclosing composite's, or its URN) is applied as a placeholder:
its outputs are plain PCollections, nothing is contacted, and the
replacement takes its place when the pipeline is submitted. An external
transform no rule mentions is expanded as usual.
"""

from __future__ import annotations

import threading
import typing
from typing import Any, Callable

from apache_beam import pvalue
from apache_beam.pipeline import AppliedPTransform, Pipeline, PipelineVisitor
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.transforms import core, window
from apache_beam.transforms.external import ExternalTransform

__all__ = ["install", "unexpanded_transforms", "KAFKA_READ_URNS"]

#: Kafka reads whose output type is known without expanding them: raw
#: (key, value) byte pairs, as Beam's Java KafkaIO produces them.
KAFKA_READ_URNS = {
    "beam:transform:org.apache.beam:kafka_read_without_metadata:v1": typing.Tuple[bytes, bytes],
}

_ATTR = "_ferrobeam_unexpanded"
_INSTALL_LOCK = threading.Lock()
_installed = False


def install(will_replace: Callable[[list[str], str], bool]) -> None:
    """Makes external transforms consult ``will_replace(enclosing labels, urn)`` before expanding."""
    global _installed
    with _INSTALL_LOCK:
        if _installed:
            return
        stock_expand = ExternalTransform.expand
        stock_to_proto = ExternalTransform.to_runner_api_transform

        def expand(self: ExternalTransform, pvalueish: Any) -> Any:
            pipeline = _pipeline_of(pvalueish)
            labels = [t.full_label for t in pipeline.transforms_stack if t.full_label]
            if not will_replace(labels, self._urn):  # pylint: disable=protected-access
                return stock_expand(self, pvalueish)
            setattr(self, _ATTR, True)
            if isinstance(pvalueish, pvalue.PBegin):
                out = pvalue.PCollection(pipeline, is_bounded=False,
                                         element_type=KAFKA_READ_URNS.get(self._urn))  # pylint: disable=protected-access
                # A source's output is in the global window; without this,
                # Beam would ask the (input-less) placeholder for its input's.
                out._windowing = core.Windowing(window.GlobalWindows())  # pylint: disable=protected-access
                return out
            return pvalue.PDone(pipeline)

        def to_runner_api_transform(self: ExternalTransform, context: Any, full_label: str) -> Any:
            if not getattr(self, _ATTR, False):
                return stock_to_proto(self, context, full_label)
            # Only ever seen while the replacements are being matched: a
            # leaf carrying the external URN, so rules can match on it.
            return beam_runner_api_pb2.PTransform(
                unique_name=full_label,
                spec=beam_runner_api_pb2.FunctionSpec(urn=self._urn, payload=self._payload))  # pylint: disable=protected-access

        ExternalTransform.expand = expand  # type: ignore[method-assign]
        ExternalTransform.to_runner_api_transform = to_runner_api_transform  # type: ignore[method-assign]
        _installed = True


def _pipeline_of(pvalueish: Any) -> Pipeline:
    if isinstance(pvalueish, dict):
        pvalueish = next(iter(pvalueish.values()))
    elif isinstance(pvalueish, (list, tuple)):
        pvalueish = pvalueish[0]
    return pvalueish.pipeline


def unexpanded_transforms(pipeline: Pipeline) -> list[str]:
    """Labels of placeholder external transforms still in ``pipeline``."""
    found: list[str] = []

    class Finder(PipelineVisitor):
        def enter_composite_transform(self, transform_node: AppliedPTransform) -> None:
            self.visit_transform(transform_node)

        def visit_transform(self, transform_node: AppliedPTransform) -> None:
            if getattr(transform_node.transform, _ATTR, False):
                found.append(transform_node.full_label)

    pipeline.visit(Finder())
    return found
