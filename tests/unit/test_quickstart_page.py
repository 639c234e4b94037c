"""The documentation's quick start shows the README's two commands exactly."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _first_shell_block(path: Path) -> str:
    match = re.search(r"```sh\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert match, f"{path} has no ```sh block"
    return match.group(1)


def test_the_quick_start_page_mirrors_the_readme() -> None:
    readme = _first_shell_block(ROOT / "README.md")
    assert readme.count("\n") == 2, "the README opens with exactly two commands"
    assert _first_shell_block(ROOT / "docs" / "quickstart.md") == readme
