"""Which architectures can recall? Trained associative recall on a CPU (lecture 13).

After Arora et al., "Zoology: Measuring and Improving Recall in Efficient Language
Models" (2023): attention, sliding-window attention, linear attention, a gated S4D
convolution and a Mamba-style selective SSM, each in the same small model, trained on
the same recall task with the same budget.

- :mod:`~attn_course.recall.data`: MQAR, selective copying and induction batches;
- :mod:`~attn_course.recall.mixers`: the five sequence mixers and their state sizes;
- :mod:`~attn_course.recall.model`: one model skeleton with the mixer as a parameter;
- :mod:`~attn_course.recall.train`: training and scoring on MQAR.
"""

from attn_course.recall.data import (
    induction_batch,
    mqar_batch,
    mqar_layout,
    selective_copy_batch,
)
from attn_course.recall.mixers import MIXERS, ShortConv, make_mixer, state_size
from attn_course.recall.model import MixerBlock, RecallLM
from attn_course.recall.train import TASK, TRAIN, mqar_accuracy, new_model, train_mqar

__all__ = [
    "MIXERS",
    "TASK",
    "TRAIN",
    "MixerBlock",
    "RecallLM",
    "ShortConv",
    "induction_batch",
    "make_mixer",
    "mqar_accuracy",
    "mqar_batch",
    "mqar_layout",
    "new_model",
    "selective_copy_batch",
    "state_size",
    "train_mqar",
]
