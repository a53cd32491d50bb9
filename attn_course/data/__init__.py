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


def load_weights(model, filename: str):
    """Load the shipped state dict ``filename`` into ``model``; return it in eval mode (CPU)."""
    import torch

    with resources.files(__package__).joinpath(filename).open("rb") as f:
        state = torch.load(f, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def save_or_compare(model, out, shipped, check: bool) -> None:
    """The end of a training module's ``main``: with ``check``, say whether ``model``'s
    weights equal the ``shipped`` model's; otherwise save them to the path ``out``."""
    import torch

    if check:
        theirs = shipped.state_dict()
        same = all(torch.equal(t, theirs[name]) for name, t in model.state_dict().items())
        print("identical to the shipped weights" if same else
              "differs from the shipped weights (another CPU type or torch version?)")
        return
    torch.save(model.state_dict(), out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
