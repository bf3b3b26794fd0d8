"""Generate the table-QA demo's data, deterministically (random.Random(7)), next to this file or in --out DIR.

    python treadle/demo/tableqa/make_data.py [--out DIR]

Writes:
  tables/*.csv      ten small tables (20-200 rows: ints, floats, strings, booleans, dates, a few missing
                    values) and one deliberately empty (0-byte) table, tables/empty.csv
  questions.jsonl   id, file_name, question; every question comes from a template family
  labels.jsonl      id, answer, type (number|string|boolean|list). Answers are computed by running each
                    question's reference pandas code on the table as read back from its CSV. `answer` is
                    always a string (JSON text for numbers and lists, "true"/"false" for booleans) so the
                    column has one type; tableqa.check_answer reads it back by `type`. A few labels have no
                    question and a couple of questions have no label, so the seed's inner join reports
                    unmatched rows on both sides.
  responses.yaml    the simulator's response book: one rule for the planner prompt, one per question for the
                    coder prompt (~85% the reference code, ~8% subtly wrong code that returns a valid but
                    incorrect answer, ~4% broken code that raises), and a fallback coder rule
  expected.json     what the book implies for the joined rows: how many come out correct, wrong, broken, or
                    fail on the empty table, and the outcome of every joined id

The reference code is run in this process with runner.execute: it is this script's own code, not generated.
The tables are built in make_data_tables.py, the question families in make_data_questions.py (beside this
script, so it imports them by name).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import random
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from make_data_questions import BROKEN_KINDS, EMPTY_QUESTIONS, FAMILIES, Candidate, broken_code
from make_data_tables import TABLES, TableSpec

SEED = 7
HERE = Path(__file__).resolve().parent
N_QUESTIONS = 200
EMPTY_TABLE = "empty.csv"
N_EMPTY_QUESTIONS = 6
WRONG_SHARE = 0.08
BROKEN_SHARE = 0.04
N_UNLABELED = 2
ORPHAN_LABELS = [
    {"id": "q901", "answer": "42", "type": "number"},
    {"id": "q902", "answer": "North", "type": "string"},
    {"id": "q903", "answer": "true", "type": "boolean"},
]
PLAN_MARKER = "Plan how to answer"
"""The planner prompt of pipeline.yaml starts with this; the coder prompt starts with CODE_MARKER."""
CODE_MARKER = "Write pandas code"
_UNSAFE_IN_QUESTIONS = re.compile(r"""['"&<>{}\\\n]""")
"""Kept out of questions so a prompt renders the same with or without HTML autoescaping."""


def _load_sibling(name: str) -> Any:
    module_name = f"_tableqa_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


tableqa = _load_sibling("tableqa")
runner = tableqa.runner  # tableqa_runner.py, as tableqa loaded it


# -------------------------------------------------------------------------------------------- helpers


def encode_answer(value: Any, kind: str) -> str:
    """A label's answer as a string: JSON text for numbers and lists, true/false for booleans."""
    if kind == "string":
        return str(value)
    if kind == "boolean":
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def _acceptable(value: Any, kind: str) -> bool:
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "string":
        return isinstance(value, str) and bool(value.strip())
    if kind == "boolean":
        return isinstance(value, bool)
    return isinstance(value, list) and 0 < len(value) <= 12


class Evaluator:
    """Runs reference, wrong and broken code on the tables as read back from the CSVs written."""

    def __init__(self, tables_dir: Path) -> None:
        self.tables_dir = tables_dir

    def run(self, file: str, code: str) -> dict[str, Any]:
        job = {"table": str(self.tables_dir / file), "display": f"tables/{file}", "code": code}
        return runner.execute(job)

    def accept(self, cand: Candidate) -> bool:
        """Run the reference code; keep the candidate when its answer is usable, noting its wrong versions."""
        outcome = self.run(cand.file, cand.code)
        if not outcome["ok"] or not _acceptable(outcome["result"], cand.type):
            return False
        cand.answer = outcome["result"]
        label = {"answer": encode_answer(cand.answer, cand.type), "type": cand.type}
        if not tableqa.check_answer({**label, "result": cand.answer}):
            raise AssertionError(f"the label does not check against its own answer: {cand.text}")
        cand.valid_wrongs = []
        for wrong in cand.wrongs:
            got = self.run(cand.file, wrong)
            if got["ok"] and got["result"] is not None and not tableqa.check_answer({**label, **got}):
                cand.valid_wrongs.append(wrong)
        return True


def _pick_questions(
    rng: random.Random, spec: TableSpec, df: pd.DataFrame, want: int, seen: set[str], evaluator: Evaluator
) -> list[Candidate]:
    pools = []
    for family in FAMILIES:
        candidates = family(rng, spec, df)
        rng.shuffle(candidates)
        pools.append(candidates)
    rng.shuffle(pools)
    picked: list[Candidate] = []
    while len(picked) < want and any(pools):
        for pool in pools:
            while pool and len(picked) < want:
                cand = pool.pop(0)
                if cand.text in seen or not evaluator.accept(cand):
                    continue
                seen.add(cand.text)
                picked.append(cand)
                break
    if len(picked) < want:
        raise SystemExit(f"make_data: only {len(picked)} usable questions for {spec.file}, wanted {want}")
    return picked


def code_rule(question: str, code: str) -> dict[str, str]:
    """The coder prompt ends with the question line; match the marker at the start and that line last."""
    return {
        "match": rf"\A\s*{CODE_MARKER}.*\nQuestion: {re.escape(question)}\s*\Z",
        "reply": json.dumps({"code": code}, ensure_ascii=False),
    }


PLAN_RULE = {
    "match": rf"\A\s*{PLAN_MARKER}.*\nQuestion: (?P<question>[^\n]*?)\s*\Z",
    "reply": (
        '{"steps": ["Find the columns the question names in the schema.", '
        '{{ ("Select the rows and values the question asks about: " ~ question) | tojson }}, '
        '"Compute the answer with pandas and assign it to result."]}'
    ),
    "reasoning": (
        "The question is: {{ question }} I will look up the columns it mentions in the schema, "
        "apply its conditions, then compute a single value of the right type."
    ),
}

FALLBACK_CODE_RULE = {
    "match": rf"\A\s*{CODE_MARKER}",
    "reply": json.dumps({"code": "result = len(df)"}),
}


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


# ----------------------------------------------------------------------------------------------- main


def generate(out: Path) -> dict[str, Any]:
    rng = random.Random(SEED)
    tables_dir = out / "tables"
    specs, frames = _write_tables(rng, tables_dir)
    evaluator = Evaluator(tables_dir)
    candidates = _number_questions(rng, _choose_questions(rng, specs, frames, evaluator))
    unlabeled, book_code, outcomes = _assign_outcomes(rng, candidates, specs, frames, evaluator)

    questions = [{"id": c.id, "file_name": c.file, "question": c.text} for c in candidates]
    labels = [
        {"id": c.id, "answer": encode_answer(c.answer, c.type), "type": c.type}
        for c in candidates
        if c.id not in unlabeled
    ]
    labels = sorted(labels + ORPHAN_LABELS, key=lambda row: row["id"])
    rules = [PLAN_RULE, *(code_rule(c.text, book_code[c.id]) for c in candidates), FALLBACK_CODE_RULE]
    expected = _expected(candidates, questions, labels, unlabeled, outcomes)
    _write_data(out, questions, labels, rules, expected)
    return expected


def _write_tables(rng: random.Random, tables_dir: Path) -> tuple[list[TableSpec], dict[str, pd.DataFrame]]:
    """Every table as CSV, and the empty one; returns their specs and the frames as read back."""
    tables_dir.mkdir(parents=True, exist_ok=True)
    specs: list[TableSpec] = []
    for build in TABLES:
        rows, spec = build(rng)
        specs.append(spec)
        text = pd.DataFrame(rows).to_csv(index=False, lineterminator="\n")
        _write_text(tables_dir / spec.file, text)
    _write_text(tables_dir / EMPTY_TABLE, "")
    frames = {spec.file: runner.load_table(str(tables_dir / spec.file), spec.file) for spec in specs}
    return specs, frames


def _choose_questions(
    rng: random.Random, specs: list[TableSpec], frames: dict[str, pd.DataFrame], evaluator: Evaluator
) -> list[Candidate]:
    """The regular questions, spread evenly over the tables, then the empty table's."""
    n_regular = N_QUESTIONS - N_EMPTY_QUESTIONS
    seen: set[str] = set()
    candidates: list[Candidate] = []
    for index, spec in enumerate(specs):
        want = n_regular // len(specs) + (1 if index < n_regular % len(specs) else 0)
        candidates += _pick_questions(rng, spec, frames[spec.file], want, seen, evaluator)
    for text, code in EMPTY_QUESTIONS:
        candidates.append(Candidate(EMPTY_TABLE, "empty_table", text, "number", code, [], (), answer=0))
    return candidates


def _number_questions(rng: random.Random, candidates: list[Candidate]) -> list[Candidate]:
    """The questions in a random order, numbered q001, q002, ..."""
    rng.shuffle(candidates)
    for number, cand in enumerate(candidates, start=1):
        cand.id = f"q{number:03d}"
        if _UNSAFE_IN_QUESTIONS.search(cand.text):
            raise AssertionError(f"question text has a character prompts may escape: {cand.text}")
    return candidates


def _assign_outcomes(
    rng: random.Random,
    candidates: list[Candidate],
    specs: list[TableSpec],
    frames: dict[str, pd.DataFrame],
    evaluator: Evaluator,
) -> tuple[set[str], dict[str, str], dict[str, str]]:
    """Which questions go without a label, and the code the book answers each with: the reference code,
    a wrong version or broken code. Returns (unlabeled ids, code by id, outcome by id)."""
    regular = [c for c in candidates if c.file != EMPTY_TABLE]
    unlabeled = {c.id for c in rng.sample(regular, N_UNLABELED)}
    joined_regular = [c for c in regular if c.id not in unlabeled]
    n_wrong = round(WRONG_SHARE * N_QUESTIONS)
    n_broken = round(BROKEN_SHARE * N_QUESTIONS)
    wrong = rng.sample([c for c in joined_regular if c.valid_wrongs], n_wrong)
    wrong_ids = {c.id for c in wrong}
    broken = rng.sample([c for c in joined_regular if c.id not in wrong_ids], n_broken)
    spec_by_file = {spec.file: spec for spec in specs}

    book_code: dict[str, str] = {}
    outcomes: dict[str, str] = {}
    for cand in candidates:
        book_code[cand.id] = cand.code
        outcomes[cand.id] = "empty_table" if cand.file == EMPTY_TABLE else "correct"
    for cand in sorted(wrong, key=lambda c: c.id):
        book_code[cand.id] = rng.choice(cand.valid_wrongs)
        outcomes[cand.id] = "wrong"
    for k, cand in enumerate(sorted(broken, key=lambda c: c.id)):
        code = broken_code(BROKEN_KINDS[k % len(BROKEN_KINDS)], cand, spec_by_file[cand.file], frames[cand.file])
        got = evaluator.run(cand.file, code)
        if got["ok"] or got["stage"] != "code":
            raise AssertionError(f"broken code for {cand.id} does not fail: {code!r} -> {got}")
        book_code[cand.id] = code
        outcomes[cand.id] = "broken"
    for id_, code in book_code.items():
        if any(marker in code for marker in ("{{", "{%", "{#")):
            raise AssertionError(f"code for {id_} holds a Jinja delimiter; the simulator renders replies")
    return unlabeled, book_code, outcomes


def _expected(
    candidates: list[Candidate],
    questions: list[dict[str, Any]],
    labels: list[dict[str, Any]],
    unlabeled: set[str],
    outcomes: dict[str, str],
) -> dict[str, Any]:
    """expected.json: what the book implies for the joined rows."""
    joined = {id_: outcome for id_, outcome in sorted(outcomes.items()) if id_ not in unlabeled}
    counts = {kind: sum(1 for o in joined.values() if o == kind) for kind in BOOK_OUTCOMES}
    return {
        "seed": SEED,
        "questions": len(questions),
        "labels": len(labels),
        "joined_rows": len(joined),
        "questions_without_labels": sorted(unlabeled),
        "labels_without_questions": [row["id"] for row in ORPHAN_LABELS],
        "counts": counts,
        "failed_rows": counts["broken"] + counts["empty_table"],
        "accuracy": round(counts["correct"] / len(joined), 4),
        "families": dict(sorted(_count(c.family for c in candidates).items())),
        "outcomes": joined,
    }


def _write_data(
    out: Path,
    questions: list[dict[str, Any]],
    labels: list[dict[str, Any]],
    rules: list[dict[str, str]],
    expected: dict[str, Any],
) -> None:
    _write_text(out / "questions.jsonl", _jsonl(questions))
    _write_text(out / "labels.jsonl", _jsonl(labels))
    header = (
        "# The simulator's response book for the table-QA demo. Generated by make_data.py: do not edit.\n"
        "# Each rule: `match` is a regex searched (re.S) over the last user message, first match wins;\n"
        "# `reply` is a Jinja2 template rendered with the regex's named groups; `reasoning` is optional.\n"
    )
    book = yaml.safe_dump({"rules": rules}, sort_keys=False, allow_unicode=True, width=1_000_000)
    _write_text(out / "responses.yaml", header + book)
    _write_text(out / "expected.json", json.dumps(expected, indent=2) + "\n")


BOOK_OUTCOMES = ("correct", "wrong", "broken", "empty_table")


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: next to this file)")
    args = parser.parse_args(argv)
    expected = generate(args.out)
    print(
        f"wrote {expected['questions']} questions, {expected['labels']} labels, "
        f"{expected['joined_rows']} joined rows to {args.out}: {expected['counts']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
