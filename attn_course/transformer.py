"""A pre-norm transformer block and a tiny decoder-only language model (lecture 07).

One block, as in GPT-2 (Radford et al., 2019) and most models since:

    x = x + Attention(LayerNorm(x))      causal multi-head self-attention (lecture 05)
    x = x + MLP(LayerNorm(x))            Linear(E -> 4E), GELU, Linear(4E -> E)

The model embeds tokens (B, T) -> (B, T, E), adds or applies positions (lecture 06),
runs ``num_layers`` blocks, normalises once more and maps back to vocabulary logits
(B, T, V). "Pre-norm" (Xiong et al., "On Layer Normalization in the Transformer
Architecture", 2020) puts LayerNorm *inside* each residual branch; the residual path
itself is never normalised, which is what lets deep stacks train without warm-up tricks.

Attention uses the course's :class:`~attn_course.multihead.MultiHeadAttention`: its
``forward`` when there is nothing to add, and its own projections ``q_proj``, ``k_proj``,
``v_proj`` and ``out_proj`` when queries and keys must be rotated (RoPE) or keys and
values come from a cache (:mod:`attn_course.kv_cache`). Either way the weights are the
same, so a model can switch freely between full recomputation and cached decoding.

Positions (``positional=``): ``"learned"`` (a table of E-vectors added to the tokens,
GPT-2), ``"sinusoidal"`` (the fixed table of :func:`sinusoidal_encoding`, added),
``"rope"`` (queries and keys rotated in every layer, :func:`apply_rope`; nothing added)
or ``"none"`` (no positions at all: the model then cannot tell "ab" from "ba" except
through the causal mask).

Caveats: no dropout, no weight tying, no padding masks (every sequence in a batch has the
same length). These keep the code short; none of them changes how
attention or the cache works.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from attn_course.attention import causal_mask
from attn_course.kv_cache import KVCache, LayerKV
from attn_course.multihead import MultiHeadAttention, split_heads
from attn_course.positional import apply_rope, sinusoidal_encoding
from attn_course.sampling import sample, sampling_distribution

__all__ = [
    "MLP",
    "POSITIONAL",
    "TinyLM",
    "TransformerBlock",
    "causal_self_attention",
    "generate",
]

POSITIONAL = ("learned", "sinusoidal", "rope", "none")


def _require_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def causal_self_attention(mha: MultiHeadAttention, x: torch.Tensor, kv: LayerKV | None = None,
                          rope_base: float | None = None, need_weights: bool = False):
    """Causal self-attention of ``x`` (B, T, E) with ``mha``'s weights.

    kv: this layer's cache. Its S - T cached keys and values come first and the T new
    rows of ``x`` are the last T positions, so the causal mask is aligned at the bottom
    right, ``causal_mask(T, S, offset=S - T)``; the new keys and values are appended to
    the cache. rope_base: rotate queries and keys (RoPE) at positions ``past .. past+T-1``.
    Returns ``(out, probs)``: out (B, T, E), probs (B, H, T, S) or None.
    """
    if not isinstance(mha, MultiHeadAttention):
        raise TypeError(f"mha must be an attn_course MultiHeadAttention, got {type(mha).__name__}")
    if kv is None and rope_base is None:
        return mha(x, causal=True, need_weights=need_weights)  # lecture 05's module, unchanged
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[-1] != mha.embed_dim:
        raise ValueError(
            f"x must be a tensor of shape (B, T, {mha.embed_dim}), got "
            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
        )
    T = x.shape[1]
    past = 0 if kv is None else kv.length
    q = split_heads(mha.q_proj(x), mha.num_heads)  # (B, H, T, D)
    k = split_heads(mha.k_proj(x), mha.num_heads)  # (B, H, T, D)
    v = split_heads(mha.v_proj(x), mha.num_heads)  # (B, H, T, D)
    if rope_base is not None:
        positions = range(past, past + T)
        q, k = apply_rope(q, positions, rope_base), apply_rope(k, positions, rope_base)
    if kv is not None:
        k, v = kv.append(k, v)  # (B, H, S, D) with S = past + T
    S = k.shape[-2]
    mask = torch.from_numpy(causal_mask(T, S, offset=S - T)).to(x.device)  # (T, S), bottom right
    out, probs = mha.attend(q, k, v, mask=mask)  # (B, T, E), (B, H, T, S); through the hook points
    return out, (probs if need_weights else None)


class MLP(nn.Module):
    """Position-wise feed-forward network: Linear(E, hidden), GELU, Linear(hidden, E)."""

    def __init__(self, embed_dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))  # (B, T, E)


class TransformerBlock(nn.Module):
    """Pre-norm decoder block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``.

    Args:
        embed_dim: E. num_heads: H (must divide E). mlp_ratio: hidden width of the MLP
        is ``mlp_ratio * E``. rope_base: rotate queries and keys with RoPE (None: no).

    Forward: x (B, T, E), optional ``kv`` (a :class:`LayerKV`) for cached decoding;
    returns (B, T, E), or ``(out, probs)`` with probs (B, H, T, S) when ``need_weights``.
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: int = 4,
                 rope_base: float | None = None):
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_dim)
        self.attn = MultiHeadAttention(embed_dim, num_heads)
        self.ln2 = nn.LayerNorm(embed_dim)
        self.mlp = MLP(embed_dim, _require_int("mlp_ratio", mlp_ratio) * embed_dim)
        self.rope_base = rope_base

    def forward(self, x: torch.Tensor, kv: LayerKV | None = None, need_weights: bool = False):
        a, probs = causal_self_attention(self.attn, self.ln1(x), kv=kv, rope_base=self.rope_base,
                                         need_weights=need_weights)
        x = x + a  # (B, T, E)
        x = x + self.mlp(self.ln2(x))  # (B, T, E)
        return (x, probs) if need_weights else x


class TinyLM(nn.Module):
    """A decoder-only language model: embeddings, ``num_layers`` blocks, LayerNorm, logits.

    Args:
        vocab_size: V. max_len: the most positions the model will see (the size of
        the learned/sinusoidal table; RoPE has no table, but the limit is still checked).
        embed_dim, num_heads, num_layers, mlp_ratio: the sizes. positional: one of
        ``POSITIONAL``. rope_base: the RoPE base (for ``positional="rope"``).

    Forward: ``idx`` (B, T) token ids; ``cache`` a :class:`KVCache` from
    :meth:`new_cache` (the T tokens continue the cached ones, and are appended to it).
    Returns logits (B, T, V), or ``(logits, probs)`` with a list of one (B, H, T, S)
    attention tensor per layer when ``need_weights``.
    """

    def __init__(self, vocab_size: int, max_len: int, embed_dim: int = 64, num_heads: int = 4,
                 num_layers: int = 2, mlp_ratio: int = 4, positional: str = "rope",
                 rope_base: float = 10000.0):
        super().__init__()
        if positional not in POSITIONAL:
            raise ValueError(f"positional must be one of {POSITIONAL}, got {positional!r}")
        self.vocab_size = _require_int("vocab_size", vocab_size)
        self.max_len = _require_int("max_len", max_len)
        self.positional = positional
        self.config = dict(vocab_size=vocab_size, max_len=max_len, embed_dim=embed_dim,
                           num_heads=num_heads, num_layers=num_layers, mlp_ratio=mlp_ratio,
                           positional=positional, rope_base=rope_base)
        self.tok_emb = nn.Embedding(vocab_size, embed_dim)
        if positional == "learned":
            self.pos_emb = nn.Embedding(max_len, embed_dim)
        elif positional == "sinusoidal":
            table = torch.from_numpy(sinusoidal_encoding(max_len, embed_dim)).float()
            self.register_buffer("pos_table", table, persistent=False)  # (max_len, E)
        rope = rope_base if positional == "rope" else None
        self.blocks = nn.ModuleList(
            TransformerBlock(embed_dim, num_heads, mlp_ratio, rope_base=rope)
            for _ in range(_require_int("num_layers", num_layers))
        )
        self.ln_f = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, vocab_size, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # GPT-2's initialisation: N(0, 0.02) for the token and position tables
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def new_cache(self) -> KVCache:
        """An empty cache with one slot per layer."""
        return KVCache(len(self.blocks))

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, need_weights: bool = False):
        if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"idx must be an integer tensor of token ids with shape (B, T), got "
                f"{tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__}"
                f"{' and dtype ' + str(idx.dtype) if isinstance(idx, torch.Tensor) else ''}"
            )
        if cache is not None and (not isinstance(cache, KVCache) or len(cache.layers) != len(self.blocks)):
            raise ValueError(
                f"cache must be a KVCache with {len(self.blocks)} layers (use model.new_cache()), "
                f"got {cache!r}"
            )
        T = idx.shape[1]
        past = 0 if cache is None else cache.length
        if past + T > self.max_len:
            raise ValueError(
                f"positions {past}..{past + T - 1} exceed max_len={self.max_len} "
                f"(cached {past} tokens + {T} new)"
            )
        x = self.tok_emb(idx)  # (B, T, E)
        if self.positional == "learned":
            x = x + self.pos_emb(torch.arange(past, past + T, device=idx.device))  # (T, E) broadcast
        elif self.positional == "sinusoidal":
            x = x + self.pos_table[past:past + T]  # (T, E) broadcast over B
        maps = []
        for i, block in enumerate(self.blocks):
            kv = None if cache is None else cache.layers[i]
            if need_weights:
                x, probs = block(x, kv=kv, need_weights=True)
                maps.append(probs)
            else:
                x = block(x, kv=kv)
        logits = self.head(self.ln_f(x))  # (B, T, V)
        return (logits, maps) if need_weights else logits


@torch.no_grad()
def generate(model: TinyLM, prompt: torch.Tensor, max_new_tokens: int, use_cache: bool = True,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             generator: torch.Generator | None = None):
    """Append ``max_new_tokens`` tokens, each chosen from the model's next-token logits.

    prompt: (B, T0) token ids. With ``use_cache`` the prompt is run once ("prefill") and
    each later step feeds only the newest token, reading every earlier key and value
    from the cache; without it every step recomputes the whole sequence so far.
    temperature, top_k, top_p: how the next token is chosen (:mod:`attn_course.sampling`);
    the default ``temperature=0`` is greedy decoding (the most likely token), otherwise a
    token is drawn with ``generator``. Returns ``(tokens, logits)``: tokens (B, T0 + n)
    and the logits (B, n, V) from which each of the n new tokens was chosen.
    """
    if not isinstance(prompt, torch.Tensor) or prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(
            f"prompt must be a tensor of token ids with shape (B, T0), T0 >= 1, got "
            f"{tuple(prompt.shape) if isinstance(prompt, torch.Tensor) else type(prompt).__name__}"
        )
    _require_int("max_new_tokens", max_new_tokens, minimum=0)
    sampling_distribution(torch.zeros(1), temperature, top_k, top_p)  # checks the settings
    tokens, steps = prompt, []
    cache = model.new_cache() if use_cache else None
    new = prompt  # what the model has not seen yet
    for _ in range(max_new_tokens):
        logits = model(new if use_cache else tokens, cache=cache)[:, -1]  # (B, V)
        steps.append(logits)
        nxt = sample(logits, temperature, top_k, top_p, generator=generator)[:, None]  # (B, 1)
        tokens = torch.cat([tokens, nxt], dim=1)  # (B, T + 1)
        new = nxt
    if not steps:  # max_new_tokens == 0
        dtype = model.head.weight.dtype
        return tokens, torch.empty(prompt.shape[0], 0, model.vocab_size, dtype=dtype)
    return tokens, torch.stack(steps, dim=1)  # (B, n, V)
