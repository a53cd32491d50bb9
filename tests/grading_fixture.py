"""A frozen exercise for the grader's own tests: exercise 02 (softmax) as it stood when
those tests were written, three tasks and 7 points. The course's exercises keep changing;
the grader is tested against this copy, so that its tests check the grader, not the
current wording of a lecture's tasks. tests/test_grading_fixture.py checks that it is
still a valid source and that its released copy is what `attn-course release` makes."""

from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "grading"
FIX_SOLUTIONS = FIXTURE / "solutions"
FIX_EXERCISES = FIXTURE / "exercises"
SOFTMAX_SOURCE = FIX_SOLUTIONS / "02_softmax.ipynb"
SOFTMAX_BLANK = FIX_EXERCISES / "02_softmax.ipynb"
