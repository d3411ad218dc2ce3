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


#: public names whose examples need files a fresh checkout does not have (marked +SKIP there)
_NEEDS_FILES = {"load_method", "load_pretrained"}


@pytest.mark.parametrize("name", __import__("cossl_train").__all__)
def test_every_public_part_has_a_runnable_example(name: str) -> None:
    """``help(cossl_train.<name>)`` shows an example, and it runs as written."""
    import cossl_train

    obj = getattr(cossl_train, name)
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, globs={})
    examples = [e for t in tests for e in t.examples if not e.options.get(doctest.SKIP)]
    if name in _NEEDS_FILES:
        assert any(e.source for t in tests for e in t.examples), f"{name} shows no example"
    elif name not in ("CoLossOutput", "PairLoss"):  # results and the interface: their users show them
        assert examples, f"{name} has no runnable example in its docstring"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t, out=lambda text: print(text, end=""))
    assert runner.summarize(verbose=False).failed == 0
