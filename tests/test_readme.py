"""The project's face: the README starts with the demo command and the test command, `.ci/run` runs exactly
that test command, and the README stays short enough to read (details live in docs/)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_starts_with_the_demo_and_the_test_command_that_ci_runs():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    demo, tests = blocks[0].strip(), blocks[1].strip()
    assert demo.startswith("bash install.sh") and demo.endswith("splatdistill demo"), demo
    assert tests.startswith("bash install.sh") and tests.endswith("python3 -m pytest -q"), tests
    assert readme.index(blocks[1]) < readme.index("\n## "), "the two commands come before the first section"
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == tests
    assert len(readme) < 8000, f"README.md is {len(readme)} characters; move details to docs/"
