"""The ``>>>`` examples of the docs and the README run as written, so they cannot rot."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ["docs/analysis.md", "docs/training.md", "README.md"]


@pytest.mark.parametrize("name", DOCS)
def test_examples_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the examples write their files here
    text = (REPO / name).read_text()
    parser = doctest.DocTestParser()
    test = parser.get_doctest(text, {}, name, str(REPO / name), 0)
    if name == "docs/analysis.md":
        assert len(test.examples) > 30  # the examples are there to be run
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=lambda text: print(text, end=""))
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (output above)"
