"""Exercise 12's feedback: the reference passes, the blank stub fails, typical wrong answers
fail with their own hint, and other correct answers pass (the learner's-kernel path)."""

import pytest

from tests import exercise_harness as harness
from tests.exercise_harness import run_task, stub

NB = "12_interpretability.ipynb"


def fails_with(test_id, answer_id, code, phrase):
    harness.fails_with(NB, test_id, answer_id, code, phrase)


def passes(test_id, answer_id, code):
    harness.passes(NB, test_id, answer_id, code)


TASKS = [("interp-prev-test", "interp-prev-answer"), ("interp-patch-test", "interp-patch-answer"),
         ("interp-restore-test", "interp-restore-answer"), ("interp-which-test", "interp-which-answer"),
         ("interp-path-test", "interp-path-answer"), ("interp-share-test", "interp-share-answer"),
         ("interp-debug-test", "interp-debug-answer"), ("interp-dla-test", "interp-dla-answer"),
         ("interp-ov-test", "interp-ov-answer"), ("interp-qk-test", "interp-qk-answer"),
         ("interp-nd-test", "interp-nd-answer")]
PREDICTIONS = {"interp-which-answer": "predicted_head is None", "interp-share-answer": "predicted_share is None",
               "interp-nd-answer": "predicted_denoise is None"}


@pytest.mark.parametrize(("test_id", "answer_id"), TASKS)
def test_reference_passes_and_stub_fails(test_id, answer_id):
    assert run_task(NB, test_id).passed
    blank = stub(NB, answer_id)
    if answer_id in PREDICTIONS:  # its stub raises in its own cell; the test runs after it
        blank = blank.replace("raise NotImplementedError()", "")
    blank = run_task(NB, test_id, {answer_id: blank})
    assert not blank.passed
    assert PREDICTIONS.get(answer_id, "NotImplementedError") in blank.output, blank.output


# Task 1: previous_token_score
PREV = "def previous_token_score(probs):\n{}"


@pytest.mark.parametrize(("body", "phrase"), [
    ("    return probs.diagonal(offset=1, dim1=-2, dim2=-1).mean(dim=(0, 2))", "do not include t = 0"),
    ("    return probs.diagonal(offset=-1, dim1=-2, dim2=-1).mean()", "one score per head"),
    ("    return probs.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2)).numpy()", "stay in torch"),
    ("    T = probs.shape[-1]\n    i = torch.arange(T)\n"
     "    return probs[:, :, i, (i - 1) % T].mean(dim=(0, 2))", "do not include t = 0"),
])
def test_previous_token_wrong_answers_get_their_hints(body, phrase):
    fails_with("interp-prev-test", "interp-prev-answer", PREV.format(body), phrase)


def test_previous_token_alternatives_pass():
    loop = ("    B, H, T, _ = probs.shape\n    out = torch.zeros(H, dtype=probs.dtype)\n"
            "    for t in range(1, T):\n        out = out + probs[:, :, t, t - 1].sum(0)\n"
            "    return out / (B * (T - 1))")
    passes("interp-prev-test", "interp-prev-answer", PREV.format(loop))
    f32 = "    return probs.float().diagonal(-1, -2, -1).mean((0, 2)).double()"
    passes("interp-prev-test", "interp-prev-answer", PREV.format(f32))


# Task 2: patch_head
PATCH = ("def patch_head(model, clean, corrupted, layer, head):\n"
         "    name = f'blocks.{{layer}}.attn.hook_z'\n"
         "    _, cache = run_with_cache(model, clean, names=[name])\n{}")


@pytest.mark.parametrize(("body", "phrase"), [
    ("    with torch.no_grad(), hooks(model, [(name, lambda z, n: cache[name])]):\n"
     "        return model(corrupted)", "the other heads keep the corrupted run's"),
    ("    def put(z, n):\n        z[:, head] = cache[name][:, head]\n        return z\n"
     "    with torch.no_grad(), hooks(model, [(name, put)]):\n        return model(corrupted)",
     "change a copy of the tensor"),
    ("    point = dict(model.named_modules())[name]\n"
     "    def fh(mod, args, out):\n        out = out.clone()\n        out[:, head] = cache[name][:, head]\n"
     "        return out\n    point.register_forward_hook(fh)\n    with torch.no_grad():\n"
     "        return model(corrupted)", "handle.remove()"),
    ("    from attn_course.interp.patching import patch\n"
     "    return patch(model, corrupted, cache, name, head=head)", "write a hook that copies"),
])
def test_patch_head_wrong_answers_get_their_hints(body, phrase):
    fails_with("interp-patch-test", "interp-patch-answer", PATCH.format(body), phrase)


def test_patch_head_alternative_passes():
    handle = ("    point = dict(model.named_modules())[name]\n"
              "    def fh(mod, args, out):\n        out = out.clone()\n        out[:, head] = cache[name][:, head]\n"
              "        return out\n    h = point.register_forward_hook(fh)\n    try:\n"
              "        with torch.no_grad():\n            return model(corrupted)\n    finally:\n"
              "        h.remove()")
    passes("interp-patch-test", "interp-patch-answer", PATCH.format(handle))
    where = ("    def put(z, n):\n        keep = torch.arange(z.shape[1])[None, :, None, None] == head\n"
             "        return torch.where(keep, cache[name], z)\n"
             "    with torch.no_grad(), hooks(model, [(name, put)]):\n        return model(corrupted)")
    passes("interp-patch-test", "interp-patch-answer", PATCH.format(where))


# Task 3: restored_fraction
REST = ("def restored_fraction(model, clean, corrupted, good, bad, layer, head):\n"
        "    rows = torch.arange(clean.shape[0])\n{}\n"
        "    with torch.no_grad():\n        m_clean, m_bad = metric(model(clean)), metric(model(corrupted))\n"
        "    m_patched = metric(patch_head(model, clean, corrupted, layer, head))\n{}")
LAST = "    def metric(lo):\n        return (lo[rows, -1, good] - lo[rows, -1, bad]).mean().item()"
FRACTION = "    return (m_patched - m_bad) / (m_clean - m_bad)"


@pytest.mark.parametrize(("body", "phrase"), [
    (REST.format(LAST, "    return torch.tensor((m_patched - m_bad) / (m_clean - m_bad))"), "a Python float"),
    (REST.format(LAST, "    return (m_clean - m_patched) / (m_clean - m_bad)"), "(m(patched) - m(corrupted))"),
    (REST.format("    def metric(lo):\n        return (lo[rows, :, good] - lo[rows, :, bad]).mean().item()", FRACTION),
     "logits at position -1"),
])
def test_restored_wrong_answers_get_their_hints(body, phrase):
    fails_with("interp-restore-test", "interp-restore-answer", body, phrase)


def test_restored_alternative_passes():
    gather = ("    def metric(lo):\n        last = lo[:, -1]\n"
              "        return float((last.gather(1, good[:, None]) - last.gather(1, bad[:, None])).mean())")
    passes("interp-restore-test", "interp-restore-answer", REST.format(gather, FRACTION))


# Task 4: predict the head
@pytest.mark.parametrize(("value", "phrase"), [
    ("(1, 0)", "each carries only a share"),
    ("(0, 2)", "compare the previous-token scores"),
    ("'0, 1'", "write a pair of integers"),
    ("(0, 7)", "write a pair of integers"),
])
def test_head_prediction_wrong_answers_get_their_hints(value, phrase):
    fails_with("interp-which-test", "interp-which-answer", f"predicted_head = {value}", phrase)


@pytest.mark.parametrize("value", ["(0, 1)", "[0, 1]", "(np.int64(0), np.int64(1))"])
def test_head_prediction_forms_pass(value):
    passes("interp-which-test", "interp-which-answer", f"import numpy as np\npredicted_head = {value}")


# Task 5: path patching
PATH = ("def path_patch_keys(model, clean, corrupted, sender, receiver):\n"
        "    z0, k1 = 'blocks.0.attn.hook_z', 'blocks.1.attn.hook_k'\n"
        "    _, clean_cache = run_with_cache(model, clean, names=[z0, k1])\n"
        "    def put_sender(z, name):\n        z = z.clone()\n"
        "        z[:, sender] = clean_cache[z0][:, sender]\n        return z\n"
        "    _, patched = run_with_cache(model, corrupted, names=[k1, 'blocks.1.attn.hook_q', "
        "'blocks.1.attn.hook_v'], extra_hooks=[(z0, put_sender)])\n"
        "    def put(k, name):\n        k = k.clone()\n        k[{idx}] = {src}[{idx}]\n        return k\n"
        "    with torch.no_grad(), hooks(model, [({point}, put)]):\n        return model(corrupted)")


def path(idx=":, receiver", src="patched[k1]", point="k1"):
    return PATH.format(idx=idx, src=src, point=point)


@pytest.mark.parametrize(("code", "phrase"), [
    ("def path_patch_keys(model, clean, corrupted, sender, receiver):\n"
     "    return patch_head(model, clean, corrupted, 0, sender)", "patched the sender as a whole"),
    (path(idx=":"), "the keys of every layer-1 head changed"),
    (path(src="patched['blocks.1.attn.hook_q']", point="'blocks.1.attn.hook_q'"), "queries changed instead"),
    (path(src="patched['blocks.1.attn.hook_v']", point="'blocks.1.attn.hook_v'"), "values changed instead"),
    (path(src="clean_cache[k1]"), "keys of the whole clean run"),
    (path().replace("    with torch.no_grad(), hooks(model, [(k1, put)]):\n        return model(corrupted)",
                    "    point = dict(model.named_modules())[k1]\n"
                    "    point.register_forward_hook(lambda m, a, out: put(out, k1))\n"
                    "    with torch.no_grad():\n        return model(corrupted)"), "removes its hooks"),
    ("from attn_course.interp.circuits import path_patch\n"
     "def path_patch_keys(model, clean, corrupted, sender, receiver):\n"
     "    return path_patch(model, clean, corrupted, sender=(0, sender), receivers=[(1, receiver, 'k')])",
     "write the hooks yourself"),
])
def test_path_patching_wrong_answers_get_their_hints(code, phrase):
    fails_with("interp-path-test", "interp-path-answer", code, phrase)


def test_path_patching_alternatives_pass():
    # the sender's write into the residual stream, added to layer 1's input by hand
    residual = ("def path_patch_keys(model, clean, corrupted, sender, receiver):\n"
                "    z0, r1, k1 = 'blocks.0.attn.hook_z', 'blocks.1.hook_resid_pre', 'blocks.1.attn.hook_k'\n"
                "    _, c = run_with_cache(model, clean, names=[z0])\n"
                "    _, b = run_with_cache(model, corrupted, names=[z0, r1])\n"
                "    attn = model.blocks[0].attn\n    d = attn.head_dim\n"
                "    W = attn.out_proj.weight[:, sender * d:(sender + 1) * d]\n"
                "    delta = (c[z0][:, sender] - b[z0][:, sender]) @ W.T\n"
                "    _, p = run_with_cache(model, corrupted, names=[k1], extra_hooks=[(r1, lambda t, n: b[r1] + delta)])\n"
                "    def put(k, n):\n"
                "        keep = torch.arange(k.shape[1])[None, :, None, None] == receiver\n"
                "        return torch.where(keep, p[k1], k)\n"
                "    with torch.no_grad(), hooks(model, [(k1, put)]):\n        return model(corrupted)")
    passes("interp-path-test", "interp-path-answer", residual)
    # register_forward_hook with the handle removed in finally:
    handle = path().replace(
        "    with torch.no_grad(), hooks(model, [(k1, put)]):\n        return model(corrupted)",
        "    point = dict(model.named_modules())[k1]\n"
        "    h = point.register_forward_hook(lambda m, a, out: put(out, k1))\n"
        "    try:\n        with torch.no_grad():\n            return model(corrupted)\n    finally:\n"
        "        h.remove()")
    passes("interp-path-test", "interp-path-answer", handle)


# Task 6: predict one head's share
@pytest.mark.parametrize(("value", "phrase"), [
    ("0.49", "cannot carry what all four carry"),
    ("0.0", "not a negligible one"),
    ("0.3", "cannot carry what all four carry"),
    ("'0.12'", "write a single number"),
])
def test_share_prediction_wrong_answers_get_their_hints(value, phrase):
    fails_with("interp-share-test", "interp-share-answer", f"predicted_share = {value}", phrase)


@pytest.mark.parametrize("value", ["0.12", "0.49 / 4", "np.float32(0.1)", "0.16"])
def test_share_prediction_within_tolerance_passes(value):
    passes("interp-share-test", "interp-share-answer", f"import numpy as np\npredicted_share = {value}")


# Task 8: debug
ABL = ("def mean_ablate(model, x, layer, head):\n    name = f'blocks.{{layer}}.attn.hook_z'\n"
       "    def to_mean(z, n):\n        z = z.clone()\n{}\n        return z\n"
       "    with torch.no_grad(), hooks(model, [(name, to_mean)]):\n        return model(x)")


@pytest.mark.parametrize(("code", "phrase"), [
    ("def mean_ablate(model, x, layer, head):\n    return mean_ablate_buggy(model, x, layer, head)",
     "lands on the batch axis"),
    (ABL.format("        z[:, head] = z[:, head].mean(dim=1, keepdim=True)"), "not over the positions"),
    (ABL.format("        z[:, head] = 0"), "this is zero ablation"),
    (ABL.format("        z[:, head] = z[:, head].mean(dim=0)").replace(
        "    with torch.no_grad(), hooks(model, [(name, to_mean)]):\n        return model(x)",
        "    dict(model.named_modules())[name].register_forward_hook(lambda m, a, out: to_mean(out, name))\n"
        "    with torch.no_grad():\n        return model(x)"), "removes its hooks"),
    ("from attn_course.interp.patching import ablate\n"
     "def mean_ablate(model, x, layer, head):\n    name = f'blocks.{layer}.attn.hook_z'\n"
     "    _, c = run_with_cache(model, x, names=[name])\n"
     "    return ablate(model, x, name, head, mode='mean', reference=c[name])", "write the hook yourself"),
])
def test_debug_wrong_answers_get_their_hints(code, phrase):
    fails_with("interp-debug-test", "interp-debug-answer", code, phrase)


def test_debug_alternatives_pass():
    where = ABL.format("        keep = torch.arange(z.shape[1])[None, :, None, None] == head\n"
                       "        z = torch.where(keep, z.mean(dim=0, keepdim=True), z)")
    passes("interp-debug-test", "interp-debug-answer", where)
    cached = ("def mean_ablate(model, x, layer, head):\n    name = f'blocks.{layer}.attn.hook_z'\n"
              "    _, c = run_with_cache(model, x, names=[name])\n"
              "    mean = c[name][:, head].sum(0) / x.shape[0]\n"
              "    def put(z, n):\n        z = z.clone()\n        for b in range(z.shape[0]):\n"
              "            z[b, head] = mean\n        return z\n"
              "    with torch.no_grad(), hooks(model, [(name, put)]):\n        return model(x)")
    passes("interp-debug-test", "interp-debug-answer", cached)


# Task 9: direct logit attribution
DLA = ("def head_logit_attribution(model, tokens, target):\n"
       "    with torch.no_grad():\n"
       "        _, cache = run_with_cache(model, tokens)\n"
       "        resid = cache['hook_embed'][:, -1]\n        heads = []\n"
       "        for layer, block in enumerate(model.blocks):\n            attn = block.attn\n"
       "            z = cache[f'blocks.{{layer}}.attn.hook_z'][:, :, -1]\n"
       "            w_o = attn.out_proj.weight.reshape(attn.embed_dim, attn.num_heads, attn.head_dim)\n"
       "            out = torch.einsum('bhd,ehd->bhe', z, w_o)\n            heads.append(out)\n"
       "            resid = resid + out.sum(dim=1) + attn.out_proj.bias\n"
       "        ln = model.ln_f\n"
       "        sigma = torch.sqrt(resid.var(dim=-1, unbiased=False) + ln.eps)[:, None, None]\n"
       "        w_u = model.head.weight[target]\n"
       "        heads = torch.stack(heads, dim=1)\n"
       "        centred = heads - heads.mean(dim=-1, keepdim=True)\n"
       "        return {}")


@pytest.mark.parametrize(("ret", "phrase"), [
    ("(heads * ln.weight) @ w_u / sigma", "subtracts each vector's mean"),
    ("(centred * ln.weight) @ w_u", "also divides by sigma"),
    ("centred @ w_u / sigma", "weight gamma multiplies"),
    ("ln(heads) @ w_u", "normalises it by its own size"),
    ("((centred * ln.weight) @ w_u / sigma).transpose(1, 2).reshape(heads.shape[:3])",
     "the sum is right but the split is not"),
    ("((centred * ln.weight) @ w_u / sigma)[..., None]", "one number per sequence, layer and head"),
])
def test_attribution_wrong_answers_get_their_hints(ret, phrase):
    fails_with("interp-dla-test", "interp-dla-answer", DLA.format(ret), phrase)


def test_attribution_shortcut_gets_its_hint():
    code = ("from attn_course.interp.circuits import direct_logit_attribution\n"
            "def head_logit_attribution(model, tokens, target):\n"
            "    t = direct_logit_attribution(model, tokens)\n"
            "    return torch.stack([torch.stack([t[f'L{l}H{h}'][:, -1, target] for h in range(4)], 1)"
            " for l in range(2)], 1)")
    fails_with("interp-dla-test", "interp-dla-answer", code, "write the attribution yourself")


def test_attribution_alternatives_pass():
    # float64 loops over heads and out_proj column blocks; sigma from what ln_f receives
    loops = ("def head_logit_attribution(model, tokens, target):\n"
             "    seen = {}\n"
             "    h = model.ln_f.register_forward_pre_hook(lambda m, a: seen.update(r=a[0]))\n"
             "    try:\n        _, cache = run_with_cache(model, tokens)\n    finally:\n        h.remove()\n"
             "    r = seen['r'][:, -1].double()\n"
             "    sigma = ((r - r.mean(-1, keepdim=True)) ** 2).mean(-1).add(model.ln_f.eps).sqrt()\n"
             "    u = (model.ln_f.weight * model.head.weight[target]).detach().double()\n"
             "    L, H = len(model.blocks), model.blocks[0].attn.num_heads\n"
             "    out = torch.zeros(tokens.shape[0], L, H, dtype=torch.float64)\n"
             "    for l in range(L):\n        a = model.blocks[l].attn\n        d = a.head_dim\n"
             "        for hd in range(H):\n"
             "            z = cache[f'blocks.{l}.attn.hook_z'][:, hd, -1].double()\n"
             "            w = a.out_proj.weight[:, hd * d:(hd + 1) * d].detach().double()\n"
             "            c = z @ w.T\n"
             "            c = c - c.mean(-1, keepdim=True)\n"
             "            out[:, l, hd] = (c @ u) / sigma\n"
             "    return out")
    passes("interp-dla-test", "interp-dla-answer", loops)
    # the mean removed from the unembedding direction instead of from each write (the same number)
    centred_u = DLA.format("heads @ ((ln.weight * w_u) - (ln.weight * w_u).mean()) / sigma")
    passes("interp-dla-test", "interp-dla-answer", centred_u)


def test_no_hint_contains_a_line_of_the_solution():
    assert harness.solution_in_hints(NB) == []


@pytest.mark.parametrize(("test_id", "answer_id", "code"), [
    ("interp-which-test", "interp-which-answer", "predicted_head = (1, 3)"),
    ("interp-share-test", "interp-share-answer", "predicted_share = 0.9"),
    ("interp-nd-test", "interp-nd-answer", "predicted_denoise = 0.9\npredicted_noise = 0.9")])
def test_the_visible_prediction_check_cannot_be_searched(test_id, answer_id, code):
    """The visible test accepts any well-formed prediction; only the hidden tests grade it."""
    run = run_task(NB, test_id, {answer_id: code}, hidden=False)
    assert run.passed, run.output


# Task 10: the OV circuit and the copying score
OV = ("def ov_copying_score(model, layer, head):\n"
      "    with torch.no_grad():\n"
      "        attn = model.blocks[layer].attn\n        d = attn.head_dim\n"
      "        rows = slice(head * d, (head + 1) * d)\n"
      "        x = {x}\n"
      "        v = x @ attn.v_proj.weight[rows].T + attn.v_proj.bias[rows]\n"
      "        out = v @ attn.out_proj.weight[:, rows].T\n"
      "        out = {centre}\n"
      "        ov = {ov}\n"
      "        inner = ov[1:, 1:]\n"
      "        own = inner.argmax(dim={axis}) == torch.arange(inner.shape[0])\n"
      "        return ov, {score}")


def ov(x="model.blocks[layer].ln(model.tok_emb.weight)", centre="out - out.mean(dim=-1, keepdim=True)",
       ov="(out * model.ln_f.weight) @ model.head.weight.T", axis="-1", score="own.float().mean().item()"):
    return OV.format(x=x, centre=centre, ov=ov, axis=axis, score=score)


@pytest.mark.parametrize(("code", "phrase"), [
    (ov(x="model.tok_emb.weight"), "through its own LayerNorm"),
    (ov(centre="out"), "centre what the head writes"),
    (ov(ov="out @ model.head.weight.T"), "weight gamma multiplies"),
    (ov(ov="((out * model.ln_f.weight) @ model.head.weight.T).T"), "rows and columns are swapped"),
    (ov(axis="0"), "not of each column"),
    (ov(score="(ov.argmax(-1) == torch.arange(ov.shape[0])).float().mean().item()"), "leave out token 0 (BOS)"),
    (ov(score="100 * own.float().mean().item()"), "not a percentage"),
    (ov(score="own.float().mean()"), "a Python float"),
    (ov(score="own.float().mean().item()").replace("return ov, ", "return "), "a pair (ov, score)"),
])
def test_ov_wrong_answers_get_their_hints(code, phrase):
    fails_with("interp-ov-test", "interp-ov-answer", code, phrase)


def test_ov_shortcut_gets_its_hint():
    code = ("from attn_course.interp.circuits import ov_circuit\n"
            "def ov_copying_score(model, layer, head):\n"
            "    ov = ov_circuit(model, layer, head)\n    inner = ov[1:, 1:]\n"
            "    return ov, (inner.argmax(-1) == torch.arange(inner.shape[0])).float().mean().item()")
    fails_with("interp-ov-test", "interp-ov-answer", code, "write the circuit yourself")


def test_ov_alternatives_pass():
    # float64, the head's weights reshaped per head, a loop for the score, the mean removed
    # from the unembedding instead of from the head's write (the same matrix)
    alt = ("def ov_copying_score(model, layer, head):\n"
           "    a = model.blocks[layer].attn\n    H, d, E = a.num_heads, a.head_dim, a.embed_dim\n"
           "    x = model.blocks[layer].ln(model.tok_emb.weight).detach().double()\n"
           "    wv = a.v_proj.weight.detach().double().reshape(H, d, E)[head]\n"
           "    bv = a.v_proj.bias.detach().double().reshape(H, d)[head]\n"
           "    wo = a.out_proj.weight.detach().double().reshape(E, H, d)[:, head]\n"
           "    u = model.head.weight.detach().double() * model.ln_f.weight.detach().double()\n"
           "    u = u - u.mean(dim=-1, keepdim=True)\n"
           "    ov = (x @ wv.T + bv) @ wo.T @ u.T\n"
           "    hits = 0\n"
           "    for t in range(1, ov.shape[0]):\n"
           "        hits += int(ov[t, 1:].argmax()) == t - 1\n"
           "    return ov, hits / (ov.shape[0] - 1)")
    passes("interp-ov-test", "interp-ov-answer", alt)
    passes("interp-ov-test", "interp-ov-answer", ov(score="float(own.double().mean())"))


# Task 11: the QK circuit of an induction head
QK = ("from attn_course.positional import apply_rope\n"
      "def induction_qk(model, head, offset):\n"
      "    with torch.no_grad():\n"
      "        b0, b1 = model.blocks[0], model.blocks[1]\n"
      "        src, attn = b0.attn, b1.attn\n        d = attn.head_dim\n"
      "        emb = model.tok_emb.weight\n        bias = {bias}\n        s = slice(d, 2 * d)\n"
      "        v = {x0} @ src.v_proj.weight[s].T + src.v_proj.bias[s]\n"
      "        key_in = {key_in}\n"
      "        r = slice(head * d, (head + 1) * d)\n"
      "        q = {ln}(emb + bias) @ attn.q_proj.weight[r].T + attn.q_proj.bias[r]\n"
      "        k = {ln}(key_in) @ attn.k_proj.weight[r].T + attn.k_proj.bias[r]\n"
      "        {rope}\n"
      "        scores = {scores}\n"
      "        inner = scores[1:, 1:]\n"
      "        match = (inner.argmax(dim={axis}) == torch.arange(inner.shape[0])).float().mean()\n"
      "        return scores, {match}")
ROPE = "q = apply_rope(q[:, None, :], [{}])[:, 0]\n        k = apply_rope(k[:, None, :], [{}])[:, 0]"
ROPE_RIGHT = ROPE.format("offset", 0)


def qk(bias="src.out_proj.bias", x0="b0.ln(emb)", key_in="v @ src.out_proj.weight[:, s].T + bias",
       ln="b1.ln", rope=ROPE_RIGHT, scores="q @ k.T / d**0.5", axis="-1", match="match.item()"):
    return QK.format(bias=bias, x0=x0, key_in=key_in, ln=ln, rope=rope, scores=scores, axis=axis, match=match)


def test_qk_template_is_the_reference():
    passes("interp-qk-test", "interp-qk-answer", qk())


@pytest.mark.parametrize(("code", "phrase"), [
    (qk(rope="pass"), "the model's positions are rotary"),
    (qk(rope=ROPE.format(0, "offset")), "the query comes offset positions after the key"),
    (qk(key_in="emb + bias"), "what layer 0's head 1 wrote for token b"),
    (qk(ln=""), "through its own LayerNorm"),
    (qk(bias="0"), "layer 0's output bias"),
    (qk(scores="q @ k.T"), "sqrt(head_dim)"),
    (qk(x0="emb"), "through layer 0's LayerNorm"),
    (qk(scores="(q @ k.T / d**0.5).T"), "rows and columns are swapped"),
    (qk(axis="0"), "not of each column"),
    (qk(match="(scores.argmax(-1) == torch.arange(scores.shape[0])).float().mean().item()"),
     "leave out token 0 (BOS)"),
    (qk(match="100 * match.item()"), "not a percentage"),
    (qk(match="match"), "a Python float"),
    (qk().replace("return scores, match.item()", "return scores"), "a pair (scores, match)"),
])
def test_qk_wrong_answers_get_their_hints(code, phrase):
    fails_with("interp-qk-test", "interp-qk-answer", code, phrase)


def test_qk_shortcut_gets_its_hint():
    code = ("from attn_course.interp.circuits import qk_circuit_kcomposition\n"
            "def induction_qk(model, head, offset):\n"
            "    s = qk_circuit_kcomposition(model, 1, head, (0, 1), offset)\n    inner = s[1:, 1:]\n"
            "    return s, (inner.argmax(-1) == torch.arange(inner.shape[0])).float().mean().item()")
    fails_with("interp-qk-test", "interp-qk-answer", code, "write the circuit yourself")


def test_qk_alternatives_pass():
    # float64 throughout, the rotation written out with cos and sin per feature pair, a loop
    # for the match
    alt = ("def induction_qk(model, head, offset):\n"
           "    m = model\n    a0, a1 = m.blocks[0].attn, m.blocks[1].attn\n    d = a1.head_dim\n"
           "    dd = lambda t: t.detach().double()\n"
           "    ln0 = torch.nn.functional.layer_norm\n"
           "    def ln(block, t):\n"
           "        return ln0(t, (t.shape[-1],), dd(block.ln.weight), dd(block.ln.bias), block.ln.eps)\n"
           "    emb, bias = dd(m.tok_emb.weight), dd(a0.out_proj.bias)\n"
           "    v = ln(m.blocks[0], emb) @ dd(a0.v_proj.weight[d:2 * d]).T + dd(a0.v_proj.bias[d:2 * d])\n"
           "    key_in = v @ dd(a0.out_proj.weight[:, d:2 * d]).T + bias\n"
           "    r = slice(head * d, (head + 1) * d)\n"
           "    q = ln(m.blocks[1], emb + bias) @ dd(a1.q_proj.weight[r]).T + dd(a1.q_proj.bias[r])\n"
           "    k = ln(m.blocks[1], key_in) @ dd(a1.k_proj.weight[r]).T + dd(a1.k_proj.bias[r])\n"
           "    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d) * offset\n"
           "    c, s_ = torch.cos(theta), torch.sin(theta)\n"
           "    q1, q2 = q[:, 0::2], q[:, 1::2]\n"
           "    q = torch.stack([q1 * c - q2 * s_, q1 * s_ + q2 * c], dim=-1).reshape(q.shape)\n"
           "    scores = q @ k.T / d ** 0.5\n"
           "    hits = sum(int(scores[a, 1:].argmax()) == a - 1 for a in range(1, scores.shape[0]))\n"
           "    return scores, hits / (scores.shape[0] - 1)")
    passes("interp-qk-test", "interp-qk-answer", alt)


# Task 12: noising versus denoising on a saturating metric
@pytest.mark.parametrize(("code", "phrase"), [
    # the logit difference's quarter, on both
    ("predicted_denoise = 0.25\npredicted_noise = 0.25", "more than a quarter of the log-probability's way"),
    ("predicted_denoise = 0.5\npredicted_noise = 0.25", "its probability stays close to 1"),
    ("predicted_denoise = 1.0\npredicted_noise = 0.0", "does not come all the way back"),
    ("predicted_denoise = 0.5\npredicted_noise = -0.3", "at least about 0"),
    ("predicted_denoise = 'half'\npredicted_noise = 0.0", "predicted_denoise is a number"),
])
def test_noising_wrong_predictions_get_their_hints(code, phrase):
    fails_with("interp-nd-test", "interp-nd-answer", code, phrase)


@pytest.mark.parametrize("code", ["predicted_denoise = 0.45\npredicted_noise = 0.05",
                                  "import numpy as np\npredicted_denoise = np.float32(0.6)\npredicted_noise = 0"])
def test_noising_close_predictions_pass(code):
    passes("interp-nd-test", "interp-nd-answer", code)
