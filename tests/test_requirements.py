"""requirements/ stays true: every test cited in requirements.md and user-stories-mapping.md exists
(with the named test function where one is named), and every requirement ID the mapping cites is defined."""

from __future__ import annotations

import re

from tests.conftest import ROOT

REQUIREMENTS = ROOT / "requirements" / "requirements.md"
MAPPING = ROOT / "requirements" / "user-stories-mapping.md"
CITED = re.compile(r"`((?:tests|benchmarks)/[^`:\s]*)(?:::(\w+))?`")
ID = re.compile(r"\b([A-Z]{1,2}-\d+)\b")


def cited_tests(text: str) -> list[tuple[str, str | None]]:
    return CITED.findall(text)


def test_every_cited_test_exists():
    cited = cited_tests(REQUIREMENTS.read_text()) + cited_tests(MAPPING.read_text())
    assert len(cited) > 20  # the scan really sees the tables
    for path, function in cited:
        target = ROOT / path
        assert target.exists(), f"{path} is cited but does not exist"
        if function:
            assert re.search(rf"def {function}\b", target.read_text()), f"{path}::{function} is cited but not defined"


def test_every_requirement_the_mapping_cites_is_defined():
    defined = {m.group(1) for m in re.finditer(r"^\| ([A-Z]{1,2}-\d+) \|", REQUIREMENTS.read_text(), re.MULTILINE)}
    assert {"F-1", "P-1", "T-1"} <= defined
    rows = [line for line in MAPPING.read_text().splitlines() if line.startswith("| US-")]
    cited = {i for row in rows for i in ID.findall(row.split("|")[2])}
    assert cited and cited <= defined, cited - defined


def test_the_scan_catches_a_missing_test():
    assert cited_tests("see `tests/nope.py::test_x` and `tests/io/`") == [
        ("tests/nope.py", "test_x"),
        ("tests/io/", ""),
    ]
