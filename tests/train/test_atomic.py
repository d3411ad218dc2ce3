"""Atomic writes leave the permissions a plain write would."""

from __future__ import annotations

from pathlib import Path

from cossl_train.atomic import atomic_write_text


def test_atomic_write_gives_the_permissions_of_a_plain_write(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = tmp_path / "atomic.txt"
    atomic_write_text(atomic, "x")
    assert atomic.read_text() == "x"
    assert atomic.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert not list(tmp_path.glob(".*.tmp"))
