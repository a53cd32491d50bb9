import os

import numpy as np
import pytest
import torch

# Triton reads TRITON_INTERPRET when it is first imported: without a GPU, choose its CPU
# interpreter before any test module can import triton (attn_course.flash.triton_mode
# does the same for learners).
if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


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
