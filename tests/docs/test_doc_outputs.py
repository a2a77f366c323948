"""The rules an example's shown output is held to: loose only where the docs say so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from doc_blocks import blocks, commands, printed, unaccounted
from doc_outputs import mismatches, same_number

LIVE = json.dumps(
    {
        "model": {"name": "vit-shapes-demo", "version": "4"},
        "results": [{"embedding": [0.3854482173919678, 2.592007875442505, -2.084184169769287]}],
        "code": "invalid_image",
        "tail": "DpldPciLpr3BpyM9",
    }
)


@pytest.mark.parametrize(
    ("shown", "value", "same"),
    [
        ("0.9919", 0.9919471891331609, True),
        ("0.9920", 0.9919471891331609, False),
        ("0.991", 0.9919471891331609, False),  # rounded, not cut
        ("2.67e-05", 2.6747104129754007e-05, True),
        ("2.68e-05", 2.6747104129754007e-05, False),
        ("-0.000", -0.00004, True),
    ],
)
def test_a_number_matches_to_the_digits_shown(shown: str, value: float, same: bool) -> None:
    assert same_number(shown, value) is same


def test_json_matches_with_rounding_and_elisions() -> None:
    shown = [
        '{"model":{…},"results":[{"embedding":[0.3854,2.5920,…]}],',
        ' "code":"invalid_image","tail":"DpldPc…"}',
    ]
    assert mismatches(shown, LIVE) == []


@pytest.mark.parametrize(
    ("shown", "where"),
    [
        ('{"model":{…},"results":[…],"code":"invalid_image"}', "not shown: 'tail'"),
        ('{"model":{"name":"vit-shapes-demo","version":"1"},…}', "$.model.version"),
        ('{"results":[{"embedding":[0.3854,2.5920]}],…}', "shown 2 items, live has 3"),
        ('{"results":[{"embedding":[0.3855,…]}],…}', "$.results[0].embedding[0]"),
        ('{"code":"invalid_imag…","tail":"x…",…}', "$.tail"),
        ('{"code":4,…}', "$.code"),
    ],
)
def test_json_that_differs_is_caught_where_it_differs(shown: str, where: str) -> None:
    problems = mismatches([shown], LIVE)
    assert any(where in p for p in problems), problems


def test_a_table_matches_cell_by_cell_whatever_its_widths() -> None:
    printed_table = "image  label  score\nexamples/square.jpg  square  0.892\nvit-client: done\n"
    assert (
        mismatches(["image label score", "examples/square.jpg square 0.892", "…"], printed_table)
        == []
    )
    assert mismatches(["image label score", "examples/square.jpg square 0.998", "…"], printed_table)
    assert mismatches(["image label…", "…"], printed_table) == []
    assert mismatches(["image …", "examples/square.jpg … 0.892", "…"], printed_table) == []
    assert mismatches(["image …", "examples/square.jpg … 0.891", "…"], printed_table)
    assert mismatches(["image label score"], printed_table)  # the rest is not elided
    assert mismatches([], "") == [] and mismatches([], "something\n")


def test_blocks_follow_the_convention(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```console\n$ curl localhost:8000/model \\\n    -s\n{}\n\n$ true\n```\n\n"
        "<!-- run -->\n```python\nfor i in range(2):\n    print(i)\n# 0\n# 1\nx = 1  # no\n```\n\n"
        "```bash\ncurl localhost:8000/healthz\n```\n\n"
        "<!-- not run: needs a GPU -->\n```bash\nvit-client classify x.png\n```\n"
    )
    console, python, bare, excused = blocks(page)
    assert [(c.command, c.shown) for c in commands(console)] == [
        ("curl localhost:8000/model \\\n    -s", ["{}"]),
        ("true", []),
    ]
    assert python.runs and printed(python) == ["0", "1"]
    assert "does not run" in (unaccounted(bare) or "")
    assert excused.not_run_reason == "needs a GPU" and unaccounted(excused) is None
