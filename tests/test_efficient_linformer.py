import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_course.efficient.linformer import LinformerSelfAttention, linformer_attention
from attn_course.testing import assert_close
from tests.reference import attention_loop


@pytest.mark.parametrize(("lead", "T", "S", "P", "D", "Dv"),
                         [((), 3, 5, 2, 4, 3), ((2,), 7, 7, 3, 5, 6), ((2, 3), 9, 12, 5, 8, 8)])
def test_projected_keys_and_values_then_exact_attention(lead, T, S, P, D, Dv):
    g = torch.Generator().manual_seed(S)
    q = torch.randn(*lead, T, D, generator=g, dtype=torch.float64)
    k = torch.randn(*lead, S, D, generator=g, dtype=torch.float64)
    v = torch.randn(*lead, S, Dv, generator=g, dtype=torch.float64)
    E = torch.randn(P, S, generator=g, dtype=torch.float64)
    Fp = torch.randn(P, S, generator=g, dtype=torch.float64)
    out = linformer_attention(q, k, v, E, Fp)
    assert out.shape == (*lead, T, Dv)
    # reference: project with numpy, then the float64 attention loop
    k_proj = np.einsum("ps,...sd->...pd", E.numpy(), k.numpy())
    v_proj = np.einsum("ps,...sd->...pd", Fp.numpy(), v.numpy())
    expected, _ = attention_loop(q.numpy(), k_proj, v_proj)
    assert_close(out, expected, "linformer vs projected attention loop")


@pytest.mark.parametrize("S", [1, 6, 13])
def test_identity_projections_give_exact_attention(S):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, S, 5, generator=g, dtype=torch.float64) for _ in range(3))
    eye = torch.eye(S, dtype=torch.float64)
    assert_close(linformer_attention(q, k, v, eye, eye), F.scaled_dot_product_attention(q, k, v),
                 "P = S, E = F = I vs torch SDPA")


def test_module_with_identity_projections_equals_torch_multihead_attention():
    torch.manual_seed(0)
    E_dim, H, T = 12, 3, 7
    ref = nn.MultiheadAttention(E_dim, H, batch_first=True, dtype=torch.float64)
    ours = LinformerSelfAttention(E_dim, H, seq_len=T, proj_len=T).double()
    ours.load_from_torch(ref)
    with torch.no_grad():
        ours.E.copy_(torch.eye(T))
        ours.F.copy_(torch.eye(T))
    x = torch.randn(2, T, E_dim, dtype=torch.float64)
    expected, expected_w = ref(x, x, x, average_attn_weights=False)
    out, probs = ours(x, need_weights=True)
    assert_close(out, expected, "output")
    assert_close(probs, expected_w, "probabilities")


@pytest.mark.parametrize("share_kv", [False, True])
def test_module_shapes_shorter_inputs_and_sharing(share_kv):
    torch.manual_seed(1)
    m = LinformerSelfAttention(16, 4, seq_len=20, proj_len=6, share_kv=share_kv)
    x = torch.randn(3, 11, 16)
    out, probs = m(x, need_weights=True)
    assert out.shape == (3, 11, 16)
    assert probs.shape == (3, 4, 11, 6)
    assert (m.F is m.E) == share_kv
    n_params = sum(p.numel() for p in m.parameters())
    assert n_params == 4 * (16 * 16 + 16) + (1 if share_kv else 2) * 6 * 20
    # a shorter input uses the first T columns of E and F
    from attn_course.multihead import merge_heads, split_heads
    q, k, v = (split_heads(lin(x), 4) for lin in (m.q_proj, m.k_proj, m.v_proj))
    ref = linformer_attention(q, k, v, m.E[:, :11], m.F[:, :11])  # (B, H, T, D)
    assert_close(out, m.out_proj(merge_heads(ref)), "module vs functional")


def test_bad_arguments_are_refused():
    q = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="E must have shape"):
        linformer_attention(q, q, q, torch.zeros(2, 5), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="same length P"):
        linformer_attention(q, q, q, torch.zeros(2, 4), torch.zeros(3, 4))
    m = LinformerSelfAttention(8, 2, seq_len=5, proj_len=2)
    with pytest.raises(ValueError, match="seq_len=5"):
        m(torch.zeros(1, 6, 8))
    with pytest.raises(ValueError, match="mask"):
        m(torch.zeros(1, 4, 8), causal=True)
    with pytest.raises(ValueError, match="proj_len"):
        LinformerSelfAttention(8, 2, seq_len=5, proj_len=0)
