"""Exercises, self-check and autograding for the course, in nbgrader's format.

The modules, in the order a notebook meets them:

- :mod:`~attn_course.grading.notebooks`: nbgrader's cell metadata, read and stripped;
- :mod:`~attn_course.grading.release`: ``solutions/`` -> ``exercises/`` (``attn-course release``);
- :mod:`~attn_course.grading.checks`: what test cells call (``PASS ...`` / ``FAIL ...: hint``);
- :mod:`~attn_course.grading.integrity`: detects replaced numpy/torch/course functions;
- :mod:`~attn_course.grading.assemble`: a submission's answers + the source's tests;
- :mod:`~attn_course.grading.sandbox`, :mod:`~attn_course.grading.worker`: one trusted
  worker per notebook, which runs the test cells; :mod:`~attn_course.grading.isolation`
  and :mod:`~attn_course.grading.learner`: the learner's cells in a sandbox of their own;
  :mod:`~attn_course.grading.remote` and :mod:`~attn_course.grading.wire`: the pipe
  between them (plain data back, never a pickle);
- :mod:`~attn_course.grading.scoring`: points, status and feedback;
- :mod:`~attn_course.grading.reports`: gradebook.csv and Gradescope's results.json;
- :mod:`~attn_course.grading.grader`: batch grading (``attn-course grade``);
- :mod:`~attn_course.grading.gradescope`: the autograder zip (``attn-course gradescope``),
  and :mod:`~attn_course.grading.gradescope_run`: what its ``run_autograder`` runs;
- :mod:`~attn_course.grading.commands`: the command-line entry points.

The instructor guide is ``docs/instructors.md``.
"""
