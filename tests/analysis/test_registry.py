"""The registry is the one list of analyses: each has a command, a report section, its settings
and a docs entry, and the docs' command table is the one the registry renders."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from cossl_analysis import registry
from cossl_analysis.cli import build_parser
from cossl_analysis.config import AnalysisConfig, section_name, setting_help

DOCS = Path(__file__).resolve().parents[2] / "docs" / "analysis.md"


def test_every_analysis_has_a_command_a_report_section_and_a_docs_entry() -> None:
    analyses = registry.registered()
    assert [a.name for a in analyses] == ["similarity", "erf", "patch_drop", "co_objective", "internal_corruption",
                                          "corruption", "adversarial", "large_crop"]  # the report's order
    commands = build_parser().commands  # type: ignore[attr-defined]
    docs = DOCS.read_text()
    report = registry.commands()["report"]
    for a in analyses:
        assert a.command in commands and registry.commands()[a.command] == [a]
        assert a in report and callable(a.build) and a.title and a.help
        assert f"| `{a.command}` | {a.help} |" in docs, a.name
        if a.config is not None:
            assert is_dataclass(a.config) and getattr(AnalysisConfig(), section_name(a.config)) is not None
    assert set(commands) == {a.command for a in analyses} | set(registry.GROUPS)
    assert registry.markdown_index() in docs  # the docs index is derived, not restated


def test_every_setting_is_documented() -> None:
    docs = DOCS.read_text()
    keys = [key for key, _, _ in setting_help(AnalysisConfig)]
    for f in fields(AnalysisConfig):
        if is_dataclass(f.default_factory):  # type: ignore[arg-type]
            keys += [key for key, _, _ in setting_help(f.default_factory, f.name + ".")]  # type: ignore[arg-type]
    assert len(keys) > 25
    missing = [k for k in keys if f"`{k}`" not in docs]
    assert not missing, missing


def test_groups_and_sweeps() -> None:
    from cossl_analysis.config import load_analysis_config

    robustness = [a.name for a in registry.commands()["robustness"]]
    assert robustness == ["internal_corruption", "corruption", "adversarial", "large_crop"]
    assert registry.sweeps() == ["internal_corruption", "corruption", "adversarial"]
    chosen = registry.plan("robustness", load_analysis_config(["robustness.sweeps=[adversarial]"]))
    assert [a.name for a in chosen] == ["adversarial", "large_crop"]  # the large-crop study always runs
    # an analysis's own command runs it whatever the sweeps
    assert [a.name for a in registry.plan("corruption", load_analysis_config(["robustness.sweeps=[]"]))] == [
        "corruption"]


def test_a_name_registers_once_and_only_if_declared() -> None:
    registry.registered()[0].build  # noqa: B018 - loads the report, which registers every builder
    with pytest.raises(ValueError, match="registered twice"):
        registry.section("erf")(lambda session: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="declare it there first"):
        registry.section("nope")(lambda session: None)  # type: ignore[arg-type,return-value]
