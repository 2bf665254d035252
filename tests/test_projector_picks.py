"""The projector's picks: which rows a chart selection event names (a click, a box, a lasso, the
rings' repeated points, a typed array's customdata), and the summary of a picked set checked
against counts made by hand."""

from __future__ import annotations

import numpy as np
import pytest

from dashboard.analysis import picks

CLASSES = [str(k) for k in range(10)]


def point(index: int, row: int, true: str = "3", guess: str = "3", curve: int = 0) -> dict:
    """A point as Streamlit's plotly selection state lists it."""
    return {
        "curve_number": curve,
        "point_number": row,
        "point_index": row,
        "x": 0.5,
        "y": -1.25,
        "customdata": [index, row, true, guess],
    }


def event(points: list[dict], box: list | None = None, lasso: list | None = None) -> dict:
    return {
        "selection": {
            "points": points,
            "point_indices": [p["point_index"] for p in points],
            "box": box or [],
            "lasso": lasso or [],
        }
    }


def test_a_click_names_one_row_and_no_area() -> None:
    assert picks.picked_rows(event([point(4021, 17)])) == picks.ChartPick((17,), False)


def test_a_box_names_every_row_inside_once_in_order() -> None:
    # row 5 twice: its class trace and the ring around the clicked image
    points = [point(900, 5), point(31, 2, curve=1), point(900, 5, curve=11), point(77, 9)]
    box = [{"xref": "x", "yref": "y", "x": [0.1, 2.0], "y": [-3.0, 1.0]}]
    assert picks.picked_rows(event(points, box=box)) == picks.ChartPick((5, 2, 9), True)


def test_a_lasso_is_an_area_too_and_typed_rows_decode() -> None:
    typed = {**point(12, 3), "customdata": {"0": 12, "1": 3, "2": "1", "3": "7"}}
    lasso = [{"xref": "x", "yref": "y", "x": [0, 1, 1], "y": [0, 0, 1]}]
    assert picks.picked_rows(event([typed, point(8, 1)], lasso=lasso)) == picks.ChartPick(
        (3, 1), True
    )


@pytest.mark.parametrize("empty", [None, {}, {"selection": None}, event([])])
def test_nothing_picked_names_no_row(empty) -> None:
    assert picks.picked_rows(empty) == picks.ChartPick((), False)


def test_a_box_around_no_point_is_an_empty_area() -> None:
    box = [{"xref": "x", "yref": "y", "x": [5, 6], "y": [5, 6]}]
    assert picks.picked_rows(event([], box=box)) == picks.ChartPick((), True)


def test_points_without_a_row_are_skipped() -> None:
    bare = {"curve_number": 0, "point_index": 4, "x": 1, "y": 2}
    assert picks.picked_rows(event([bare, point(50, 8)])).rows == (8,)


def test_the_summary_counts_right_wrong_and_classes_by_hand() -> None:
    labels = np.array([3, 3, 5, 8, 3, 5, 1, 8, 8, 8])
    predicted = np.array([3, 5, 5, 8, 3, 3, 1, 8, 2, 8])
    rows = [0, 1, 2, 3, 5, 7, 8, 9]
    summary = picks.summarize(rows, labels, predicted, CLASSES)
    # by hand: rows' true classes 3 3 5 8 5 8 8 8; wrong: row 1 (3→5), 5 (5→3), 8 (8→2)
    assert (summary.count, summary.right, summary.wrong) == (8, 5, 3)
    assert summary.by_class == (("8", 4), ("3", 2), ("5", 2))  # most first, ties by class
    assert summary.text() == (
        "8 images selected: 5 right, 3 wrong; by true class: 8: 4, 3: 2, 5: 2."
    )
    assert picks.summarize([6], labels, predicted, CLASSES).text() == (
        "1 image selected: 1 right, 0 wrong; by true class: 1: 1."
    )


def test_the_gallery_shows_the_mistakes_first() -> None:
    labels = np.array([0, 1, 2, 3, 4, 5])
    predicted = np.array([0, 7, 2, 9, 4, 5])
    assert picks.gallery_order([5, 3, 0, 1, 4], labels, predicted) == [1, 3, 0, 4, 5]
