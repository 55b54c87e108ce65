"""The mutation runner's engine: each mutant still finds its function and
node in today's code (else it is stale and the runner says so), and an edit
changes that node only."""

import ast
import dataclasses
import pathlib
import re

import pytest

from tests.mutation import run_mutants
from tests.mutation.run_mutants import MUTANTS
from tests.mutation.run_mutants import Mutant
from tests.mutation.run_mutants import Stale
from tests.mutation.run_mutants import apply_edit
from tests.mutation.run_mutants import drop
from tests.mutation.run_mutants import if_test
from tests.mutation.run_mutants import in_string
from tests.mutation.run_mutants import rename_def
from tests.mutation.run_mutants import swap

ROOT = pathlib.Path(__file__).resolve().parents[2]

SOURCE = '''\
import numpy as np  # a comment the edits must keep


class Table:
    def rows(self, ids, stop):
        valid = ids < stop   # keep  this   spacing
        if self.mask_zero:
            valid = valid & (ids != 0)
        return np.where(valid, ids * 2, -1)

    def on_begin(self):
        self.ready = True


def pattern():
    return r"(a|b"  r"|c)"
'''


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_every_mutant_applies_to_todays_code(mutant):
    before = (ROOT / mutant.path).read_text()
    after = mutant.apply(before)  # raises Stale when the code moved on
    assert ast.dump(ast.parse(after)) != ast.dump(ast.parse(before))


def test_mutant_names_are_unique_and_their_test_paths_exist():
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names))
    for mutant in MUTANTS:
        paths = [a for i, a in enumerate(mutant.tests)
                 if not a.startswith("-") and (i == 0 or mutant.tests[i - 1] != "-k")]
        assert paths, mutant.name
        for path in paths:
            assert (ROOT / path.split("::")[0]).exists(), (mutant.name, path)


def test_an_edit_rewrites_only_its_node():
    after = apply_edit(SOURCE, "Table.rows", swap("ids < stop", "ids <= stop"))
    assert after == SOURCE.replace("ids < stop", "ids <= stop")
    # matched by normalized source: other quotes and spacing than the file's
    after = apply_edit(SOURCE, "Table.rows", swap("np.where(valid,ids*2,-1)", "ids"))
    assert after == SOURCE.replace("np.where(valid, ids * 2, -1)", "ids")


def test_a_lower_precedence_replacement_is_parenthesized():
    after = apply_edit(SOURCE, "Table.rows", swap("2", "1 + 1"))
    assert "ids * (1 + 1)" in after
    assert ast.dump(ast.parse(after)) != ast.dump(ast.parse(SOURCE))


def test_drop_if_test_string_part_and_rename():
    after = apply_edit(SOURCE, "Table.rows", drop("valid = valid & (ids != 0)"))
    assert "        if self.mask_zero:\n            pass\n" in after  # a body stays valid
    after = apply_edit(SOURCE, "Table.rows", if_test("self.mask_zero", "False"))
    assert "        if False:\n" in after
    after = apply_edit(SOURCE, "pattern", in_string("|c", ""))
    assert "return '(a|b)'" in after
    after = apply_edit(SOURCE, "Table.on_begin", rename_def("_unused"))
    assert after == SOURCE.replace("def on_begin", "def _unused")
    after = apply_edit(SOURCE, "Table.on_begin", drop("self.ready = True"))
    assert "self.ready" not in after and ast.parse(after)


@pytest.mark.parametrize("function,edit,why", [
    ("Table.missing", swap("ids", "0"), "0 definitions of 'missing'"),
    ("Table.rows", swap("ids > stop", "True"), "0 nodes"),
    ("Table.rows", swap("ids", "0"), "nodes `ids`"),  # not unique
    ("Table.rows", swap("valid", "True", nth=9), "no node 9"),
    ("Table.rows", if_test("self.other", "False"), "0 `if self.other:`"),
    ("pattern", in_string("|d", ""), "0 strings"),
])
def test_a_missing_function_or_node_is_stale(function, edit, why):
    with pytest.raises(Stale, match=why.replace("(", r"\(").replace("`", ".")):
        apply_edit(SOURCE, function, edit)


def test_the_runner_reports_a_stale_mutant_without_running_tests():
    mutant = Mutant("gone", "keras_mixed_dim/io_utils.py", "no_such_function",
                    swap("x", "y"), ["tests/test_io_utils.py"])
    outcome, seconds, why = run_mutants.run(mutant)
    assert (outcome, seconds) == ("stale", 0.0) and "no_such_function" in why


def test_a_test_selection_that_runs_nothing_is_stale_not_killed():
    mutant = dataclasses.replace(MUTANTS[0], tests=[
        "tests/mutation/test_run_mutants.py", "-k", "no_test_has_this_name"])
    outcome, _, why = run_mutants.run(mutant)
    assert outcome == "stale" and "exited 5" in why


def test_the_docs_count_every_mutant():
    # the pages said 93 while the runner held 98
    pages = {"docs/guarantees.md": r"There are (\d+)\s+mutants",
             "docs/testing.md": r"\((\d+) mutants;"}
    for page, pattern in pages.items():
        counts = re.findall(pattern, (ROOT / page).read_text())
        assert counts and {int(c) for c in counts} == {len(MUTANTS)}, (page, counts)
