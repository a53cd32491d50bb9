"""The grader tests' frozen exercise is a valid source with a matching released copy."""

from attn_course.grading import notebooks as nbf
from attn_course.grading.release import release_notebook, render
from tests.grading_fixture import SOFTMAX_BLANK, SOFTMAX_SOURCE


def test_fixture_is_a_source_and_its_release():
    src = nbf.read_notebook(SOFTMAX_SOURCE)
    assert nbf.released_copy_problem(src, SOFTMAX_SOURCE) is None
    assert nbf.max_points(src) == 7
    assert render(release_notebook(src)) == SOFTMAX_BLANK.read_text()
