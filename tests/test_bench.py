"""make bench's arithmetic and table (no root, nothing runs): medians, ratios against the
bare-etcd baseline of the same cell, and a Markdown table whose lines line up."""

from __future__ import annotations

import argparse

import pytest

from lab.bench import COLUMNS, Cell, median, number, parse_sizes, ratio, row, table_head, table_line


def test_median_of_nothing_is_missing_not_zero():
    assert median([]) is None
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, 2.0]) == 1.5


@pytest.mark.parametrize(
    ("value", "base", "expected"),
    [(2.0, 0.5, 4.0), (None, 0.5, None), (2.0, None, None), (2.0, 0.0, None)],
)
def test_ratio_is_against_the_baseline_and_missing_without_one(value, base, expected):
    assert ratio(value, base) == expected


def test_number_shows_missing_values_as_a_dash():
    assert (number(None), number(1.234), number(31.6, 0)) == ("-", "1.23", "32")


def _cell() -> Cell:
    return Cell(
        etcd="3.5.1",
        members=3,
        stack="noskip",
        bare=[0.20, 0.10, 0.12],
        first_rejection=[0.06, 0.08, 0.07],
        in_process=[0.30, 0.36, 0.33],
        cli=[0.90, 0.96, 1.20],
        cli_phases=[
            {
                "program": 0.25,
                "network": 0.02,
                "materialize": 0.03,
                "verdict": 0.12,
                "probes": 0.05,
                "teardown": 0.04,
                "total": 0.6,
            },
            {
                "program": 0.27,
                "network": 0.03,
                "materialize": 0.03,
                "verdict": 0.10,
                "probes": 0.06,
                "teardown": 0.05,
                "total": 0.6,
            },
            {
                "program": 0.40,
                "network": 0.02,
                "materialize": 0.04,
                "verdict": 0.11,
                "probes": 0.07,
                "teardown": 0.04,
                "total": 0.7,
            },
        ],
        etcd_peak_mib=[29.0, 31.4, 30.0],
        lab_peak_mib=[84.0, 86.2, 85.0],
    )


def test_row_shows_medians_ratios_against_the_same_cells_baseline_and_the_largest_peaks():
    assert list(zip([h for h, _ in COLUMNS], row(_cell()), strict=True)) == [
        ("etcd", "3.5.1"),
        ("members", "3"),
        ("stack", "noskip"),
        ("bare etcd s", "0.12"),
        ("1st SAN rejection s", "0.07"),
        ("lab in-process s", "0.33"),
        ("ratio", "2.75"),  # 0.33 / 0.12
        ("lab CLI s", "0.96"),
        ("ratio", "8.00"),  # 0.96 / 0.12
        # start-up = wall time - the run's own total: 0.30, 0.36, 0.50
        (
            "CLI: start-up/program/network/files/verdict/probes/teardown s",
            "0.36 / 0.27 / 0.02 / 0.03 / 0.11 / 0.06 / 0.04",
        ),
        ("etcd peak MiB", "31"),
        ("lab peak MiB", "86"),
    ]


def test_a_cell_without_samples_shows_dashes():
    assert row(Cell("3.4.23", 5, "skip"))[3:] == ["-"] * (len(COLUMNS) - 3)


def test_table_lines_are_markdown_and_line_up():
    lines = [*table_head(), table_line(row(_cell())), table_line(row(Cell("3.4.23", 7, "skip")))]
    assert lines[1].replace("|", "").replace("-", "").strip() == ""
    assert len({len(line) for line in lines}) == 1, lines
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines)
    assert all(line.count("|") == len(COLUMNS) + 1 for line in lines)


def test_sizes_are_a_comma_separated_list_of_member_counts():
    assert parse_sizes("3,5,7") == [3, 5, 7]
    for bad in ("", "three", "3,0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_sizes(bad)
