"""The levelling criterion of bench.memory (and of tests/acceptance/test_memory.py) on made-up series."""

from __future__ import annotations

import pytest

from bench.memory import MIB, MemoryRun, RoundResult, Sample, levelling, shares, thirds_of


def series(values_mib: list[float], per_round: int = 4) -> dict[int, list[int]]:
    """One round per value, ``per_round`` samples each, wobbling by 2 MiB around it."""
    return {r: [int((v + (i % 2) * 2) * MIB) for i in range(per_round)] for r, v in enumerate(values_mib)}


def test_thirds_cover_every_round_once() -> None:
    for rounds in (3, 4, 5, 25, 26):
        parts = thirds_of(rounds)
        assert [r for part in parts for r in part] == list(range(rounds))
        assert all(len(part) >= 1 for part in parts)
    assert [len(p) for p in thirds_of(25)] == [8, 8, 9]
    with pytest.raises(ValueError):
        thirds_of(2)


def test_a_warm_up_then_a_flat_line_levels_off() -> None:
    values = [30, 90, 110, 115] + [118.0] * 21
    verdict = levelling("worker", series(values), 25, (0.05, 8 * MIB))
    assert verdict.levels_off
    assert verdict.thirds[0].minimum == 30 * MIB
    assert "levels off" in verdict.describe()


def test_a_steady_leak_does_not_level_off() -> None:
    # 1 MiB more every round: the last third's peak is about 9 MiB above the middle third's.
    values = [100.0 + r for r in range(25)]
    verdict = levelling("worker", series(values), 25, (0.05, 8 * MIB))
    assert verdict.thirds[2].peak - verdict.thirds[1].peak == 9 * MIB
    assert not verdict.levels_off
    assert "DOES NOT level off" in verdict.describe()


def test_the_margin_is_the_larger_of_the_relative_and_the_absolute_one() -> None:
    values = [1000.0] * 16 + [1090.0] * 9
    assert levelling("total", series(values), 25, (0.10, 64 * MIB)).levels_off
    assert not levelling("total", series(values), 25, (0.05, 64 * MIB)).levels_off
    assert levelling("total", series(values), 25, (0.05, 96 * MIB)).levels_off


def test_a_third_without_samples_is_an_error_not_a_pass() -> None:
    values = series([100.0] * 25)
    for r in thirds_of(25)[2]:
        del values[r]
    with pytest.raises(ValueError, match="last third"):
        levelling("worker", values, 25, (0.05, 8 * MIB))


def test_shares_split_the_jobs_over_the_rounds() -> None:
    assert shares(20_000, 25) == [800] * 25
    assert shares(10, 3) == [4, 3, 3]
    assert sum(shares(101, 25)) == 101


def test_the_table_shows_every_round_and_both_verdicts() -> None:
    samples = [
        Sample(r, r * 1.0 + i / 10, (100 + i) * MIB, 50 * MIB, (900 + 10 * (r % 3)) * MIB, 12)
        for r in range(6)
        for i in range(3)
    ]
    rounds = [RoundResult(r, (r + 1) * 41, 1.0, samples[3 * r + 2]) for r in range(6)]
    run = MemoryRun(200, 6, rounds, samples)
    table = run.table().splitlines()
    assert table[0].startswith("200 plain + 6 rendered jobs in 6 rounds")
    row = table[2].split()
    assert row[:4] == ["1", "41", "1.0", "102.0"]
    assert row[-2:] == ["1052.0", "12"]
    assert table[-2].startswith("worker process: peak of the last third 102.0 MiB")
    assert table[-1].endswith("levels off")
