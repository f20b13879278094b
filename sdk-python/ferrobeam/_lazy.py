"""Lazily imported package attributes.

``ferrobeam`` and ``ferrobeam.testing`` export names whose modules import
Apache Beam, which takes seconds; the ``ferrobeam`` command and the pytest
plugin must not pay for that. A package lists its exports and gets a module
``__getattr__`` / ``__dir__`` pair (PEP 562) that imports on first use.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Returns ``(__getattr__, __dir__)`` for ``package``, exporting ``name -> module``.

    A name mapped to ``package.name`` is a subpackage, exported as itself.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError("module %r has no attribute %r" % (package, name))
        imported = importlib.import_module(module)
        value = imported if module == "%s.%s" % (package, name) else getattr(imported, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(list(namespace) + list(exports))

    return __getattr__, __dir__
