"""Writing a run's column edits back into its pipeline file (engine/pipeline_file.py): only the edited
fields change (comments, layout and the other values stay), block scalars stay block scalars, a new
field goes after the column's last one, and a file the edits cannot go into is refused untouched."""

from __future__ import annotations

import pytest
import yaml

from treadle.engine.pipeline_file import edited_text

PIPELINE = """\
seed: {path: seed.csv}   # the seed
columns:
  - name: plan
    kind: llm
    model: m
    system: |
      Be careful.
    prompt: |
      Plan for {{ q }}.

  # the template
  - {name: t, kind: template, template: "{{ plan }}!"}  # inline
"""


def edit(column: str, **changes) -> dict:
    return {"kind": "edit", "column": column, "changes": {k: {"old": None, "new": v} for k, v in changes.items()}}


def test_only_the_edited_fields_change():
    history = [
        edit("plan", prompt="Plan in steps for {{ q }}.\nBe brief.\n", temperature=0.3),
        edit("t", template="[{{ plan }}]"),
        edit("plan", system=None),
    ]
    assert (
        edited_text(PIPELINE, history)
        == """\
seed: {path: seed.csv}   # the seed
columns:
  - name: plan
    kind: llm
    model: m
    system: null
    prompt: |
      Plan in steps for {{ q }}.
      Be brief.
    temperature: 0.3

  # the template
  - {name: t, kind: template, template: "[{{ plan }}]"}  # inline
"""
    )


def test_a_value_a_block_cannot_hold_exactly_is_written_quoted():
    text = edited_text(PIPELINE, [edit("plan", prompt="  indented\n\n\n")])
    assert '    prompt: "  indented\\n\\n\\n"\n' in text
    assert yaml.safe_load(text)["columns"][0]["prompt"] == "  indented\n\n\n"


def test_a_file_the_edits_cannot_go_into_is_refused():
    shared = (
        "seed: {path: s.csv}\ncolumns:\n"
        '  - {name: a, kind: template, template: &shared "{{ id }}"}\n'
        "  - {name: b, kind: template, template: *shared}\n"
    )
    with pytest.raises(
        ValueError, match=r"^the change cannot be written into the file without touching something else"
    ):
        edited_text(shared, [edit("b", template="{{ id }}!")])
