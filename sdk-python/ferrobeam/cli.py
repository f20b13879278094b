"""Entry point of the ``ferrobeam`` command.

The command itself is implemented in Rust (``ferrobeam._native.cli_main``);
this module only forwards ``sys.argv`` and turns the result into the process
exit status. Example::

    ferrobeam job-server --port 8099
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the ferrobeam CLI.

    The ``ferrobeam`` console script calls ``sys.exit(main())``.

    Args:
      argv: The full command line, program name first. Defaults to
        ``sys.argv``.

    Returns:
      The CLI's exit status (0 on success).
    """
    args = list(sys.argv if argv is None else argv)
    if not args:
        args = ["ferrobeam"]
    try:
        from ferrobeam import _native  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        sys.stderr.write(
            "ferrobeam: the native extension is not built (%s).\n"
            "Install the package from a clone with `pip install .`.\n" % e
        )
        return 2
    try:
        return int(_native.cli_main(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
