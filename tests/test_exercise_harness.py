"""The exercise harness itself, on exercise 02: it must tell a right answer from wrong ones."""

from tests.exercise_harness import run_task, stub

NB = "02_softmax.ipynb"


def test_reference_passes_and_stub_fails():
    assert run_task(NB, "softmax-stable-test").passed
    blank = run_task(NB, "softmax-stable-test",
                     {"softmax-stable-answer": stub(NB, "softmax-stable-answer")})
    assert not blank.passed
    assert "NotImplementedError" in blank.output


def test_a_wrong_answer_gets_its_hint_only_from_the_hidden_tests():
    naive = ("import numpy as np\n\ndef stable_softmax(x, axis=-1):\n"
             "    e = np.exp(x)\n    return e / e.sum(axis=axis, keepdims=True)")
    assert run_task(NB, "softmax-stable-test", {"softmax-stable-answer": naive}, hidden=False).passed
    hidden = run_task(NB, "softmax-stable-test", {"softmax-stable-answer": naive})
    assert not hidden.passed
    assert "maximum" in hidden.output
