"""The README's "Testing your pipelines" example runs as printed.

The example is cut out of README.md, written to a test file and run by a
separate pytest, the way a reader would paste it, with only the pricing
example's package put on the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import EXAMPLES_DIR, REPO_ROOT

FIRST_LINE = "# A complete test; tests/test_readme_testing_example.py runs this very text."


def readme_example() -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(FIRST_LINE)
    return text[start:text.index("```", start)]


def test_the_readme_testing_example_passes(tmp_path: Path) -> None:
    test_file = tmp_path / "test_from_readme.py"
    test_file.write_text(readme_example(), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(EXAMPLES_DIR / "pricing")] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                          str(test_file)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
