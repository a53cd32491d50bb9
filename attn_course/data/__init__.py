"""Small data shipped with the course (see each file's maker script for provenance)."""

from __future__ import annotations

from importlib import resources

import numpy as np


def load_word_vectors() -> tuple[list[str], np.ndarray]:
    """Words and their 384-d vectors (float32), rows of all-MiniLM-L6-v2's token embeddings.

    Returns (words, vectors) with vectors of shape (N, 384). See
    ``attn_course/data/make_word_vectors.py`` for where they come from.
    """
    with resources.files(__package__).joinpath("word_vectors.npz").open("rb") as f:
        data = np.load(f)
        return [str(w) for w in data["words"]], data["vectors"].astype(np.float32)
