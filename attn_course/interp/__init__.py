"""Interpretability tools (lecture 12): hook points, caching, activation patching, ablation.

See :mod:`attn_course.interp.hooks` and :mod:`attn_course.interp.patching`; the model with
known circuits is :mod:`attn_course.interp.model`, trained by
:mod:`attn_course.data.induction_lm`; a real pretrained model in the course's modules is
:mod:`attn_course.interp.minilm` (optional extra ``pretrained``).
"""
