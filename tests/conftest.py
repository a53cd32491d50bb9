import os

import numpy as np
import pytest
import torch

# Triton reads TRITON_INTERPRET when it is first imported: without a GPU, choose its CPU
# interpreter before any test module can import triton (attn_course.flash.triton.mode
# does the same for learners).
if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


def _grading_sandbox() -> str:
    from attn_course.grading.isolation import detect

    return detect().mode


# The grader refuses to run learners' code unsandboxed. Where this machine has no sandbox
# (no bubblewrap, not root), the grading tests grade the course's own notebooks as trusted
# work (the attack suite, which needs the sandbox, is skipped and says how to get it).
if _grading_sandbox() == "none":
    os.environ.setdefault("ATTN_COURSE_NO_SANDBOX", "1")


def pytest_report_header(config):
    mode = _grading_sandbox()
    if mode == "none":
        return ("grading: no sandbox on this machine, so grading tests run learners' code "
                "unisolated and the attack suite is skipped (apt-get install bubblewrap)")
    return f"grading: learners' code runs in the '{mode}' sandbox"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
