"""The examples run as a user runs them, and their loss falls: CO-SimCLR in a plain PyTorch loop, and
lightly's SimCLR with the CO term added (lightly comes with the ``interop`` extra)."""

from __future__ import annotations

import contextlib
import functools
import io
import re
import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: small enough for the suite: 64 scenes at 40 px (ResNet-18's map is 2 x 2), 16 steps of 32 images
ARGS = ["--steps", "16", "--size", "40", "--batch-size", "32", "--images", "64"]


@pytest.fixture(scope="module", autouse=True)
def _scenes_once(monkeypatch_module: pytest.MonkeyPatch) -> None:
    """Both examples generate the same scenes: once for the module."""
    import cossl_train.data.scenes as scenes

    monkeypatch_module.setattr(scenes, "digit_scenes", functools.lru_cache(maxsize=1)(scenes.digit_scenes))


@pytest.fixture(scope="module")
def monkeypatch_module() -> pytest.MonkeyPatch:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _run(name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sys, "argv", [name, *ARGS])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        runpy.run_path(str(REPO / "examples" / name), run_name="__main__")
    return out.getvalue()


@pytest.mark.parametrize("name", ["own_loop.py", "lightly_co.py"])
def test_example_runs_and_its_loss_falls(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text = _run(name, monkeypatch)
    steps = re.findall(r"^step +\d+ +loss ([\d.]+) +\(\S+ ([\d.]+), local ([\d.]+)\)$", text, re.M)
    assert len(steps) == 16
    first, last = (float(x) for x in re.search(r"first 4 steps ([\d.]+), of the last 4 steps ([\d.]+)", text).groups())
    losses = [float(s[0]) for s in steps]
    assert first == pytest.approx(sum(losses[:4]) / 4, abs=1e-3) and last == pytest.approx(sum(losses[-4:]) / 4,
                                                                                          abs=1e-3)
    assert last < first - 0.05, text
    for total, glob, local in steps:  # what is printed is the CO loss: 0.7 L_g + 0.3 L_l
        assert float(total) == pytest.approx(0.7 * float(glob) + 0.3 * float(local), abs=2e-3)
