"""Exercises, self-check and autograding for the course, in nbgrader's format.

The modules, in the order a notebook meets them:

- :mod:`~attn_course.grading.notebooks`: nbgrader's cell metadata, read and stripped;
- :mod:`~attn_course.grading.release`: ``solutions/`` -> ``exercises/`` (``attn-course release``);
- :mod:`~attn_course.grading.checks`: what test cells call (``PASS ...`` / ``FAIL ...: hint``);
- :mod:`~attn_course.grading.integrity`: detects replaced numpy/torch/course functions;
- :mod:`~attn_course.grading.assemble`: a submission's answers + the source's tests;
- :mod:`~attn_course.grading.worker` and :mod:`~attn_course.grading.sandbox`: one
  process and kernel per notebook, with time, memory and output limits;
- :mod:`~attn_course.grading.scoring`: points, status and feedback;
- :mod:`~attn_course.grading.reports`: gradebook.csv and Gradescope's results.json;
- :mod:`~attn_course.grading.grader`: batch grading (``attn-course grade``);
- :mod:`~attn_course.grading.gradescope`: the autograder zip (``attn-course gradescope``);
- :mod:`~attn_course.grading.commands`: the command-line entry points.

The instructor guide is ``docs/instructors.md``.
"""
