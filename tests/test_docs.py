"""The documentation stays true: the configuration reference lists exactly the Settings
fields (with their variables and defaults), the README's quick start runs, and relative links
between the documents resolve."""

from __future__ import annotations

import ast
import dataclasses
import enum
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from redis_harness import start_redis_server
from sessionstreams.common.settings import _RULES, ENV_PREFIX, Settings, env_variables

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
_ROW = re.compile(r"^\|\s*`(?P<field>[a-z_0-9]+)`\s*\|(?P<cells>.*)\|\s*$")
_LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")


def _section(text: str, heading: str) -> str:
    """The text under ``## heading`` up to the next level-2 heading."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def _reference_rows() -> dict[str, list[str]]:
    """``{field: [variable, default, unit, meaning]}`` of the settings tables."""
    rows: dict[str, list[str]] = {}
    for line in _section(CONFIGURATION.read_text(), "Settings reference").splitlines():
        match = _ROW.match(line)
        if match:
            assert match["field"] not in rows, f"{match['field']} is listed twice"
            rows[match["field"]] = [c.strip() for c in match["cells"].split("|")]
    return rows


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    assert field.default_factory is not dataclasses.MISSING
    return field.default_factory()


def _documents_default(cell: str, value: Any) -> bool:
    text = cell.strip("`")
    if isinstance(value, enum.Enum):
        return text == f"{type(value).__name__}.{value.name}"
    try:
        return bool(ast.literal_eval(text) == value)
    except (ValueError, SyntaxError):
        return False


def test_configuration_reference_lists_exactly_the_settings_fields() -> None:
    """docs/configuration.md has one row per Settings field, and none for a removed one."""
    fields = {f.name for f in dataclasses.fields(Settings)}
    documented = set(_reference_rows())
    assert sorted(fields - documented) == [], "fields missing from docs/configuration.md"
    assert sorted(documented - fields) == [], "docs/configuration.md lists unknown fields"


def test_configuration_reference_names_variables_and_defaults() -> None:
    """Each row names the field's SESSIONSTREAMS_ variable (or none, when the environment
    cannot set it) and its actual default."""
    rows = _reference_rows()
    for field in dataclasses.fields(Settings):
        variable, default = rows[field.name][0], rows[field.name][1]
        expected = f"`{ENV_PREFIX}{field.name.upper()}`" if _RULES[field.name].env else "—"
        assert variable == expected, field.name
        assert _documents_default(default, _default(field)), (field.name, default)


def test_configuration_reference_names_every_variable() -> None:
    """Every SESSIONSTREAMS_ variable sessionstreams reads is named in docs/configuration.md."""
    text = CONFIGURATION.read_text()
    assert sorted(v for v in env_variables() if f"`{v}`" not in text) == []


def _quick_start() -> str:
    section = _section(README.read_text(), "Quick start")
    match = re.search(r"```python\n(?P<code>.*?)```", section, re.DOTALL)
    assert match is not None, "the README's quick start has no python block"
    return match["code"]


def test_readme_quick_start_runs(tmp_path: Path) -> None:
    """The README's quick start, run as a script against a fresh server, exits 0 and prints
    the conversation it wrote."""
    script = tmp_path / "quick_start.py"
    script.write_text(_quick_start())
    server = start_redis_server(tmp_path / "redis")
    try:
        env = {**os.environ, "SESSIONSTREAMS_URL": server.url}
        done = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=tmp_path,
            check=False,
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    assert "user: Find me a flight to Lisbon." in done.stdout


@pytest.mark.parametrize(
    "document",
    [README, *sorted((ROOT / "docs").glob("*.md"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_relative_links_resolve(document: Path) -> None:
    """Every relative link of a document points at a file of the repository."""
    for match in _LINK.finditer(document.read_text()):
        target = match["target"]
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (document.parent / target).exists(), f"{document.name}: broken link {target}"
