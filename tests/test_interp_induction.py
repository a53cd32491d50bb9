import pytest
import torch

from attn_course.data.induction_lm import (
    BOS,
    MAX_REPEAT,
    MIN_REPEAT,
    SEQ_LEN,
    accuracy,
    load_induction_lm,
    make_batch,
    train,
)

#: the shipped model's accuracy on the predictable second-copy tokens must stay above this
MIN_ACCURACY = 0.97


@pytest.mark.parametrize("repeat", [None, MIN_REPEAT, 9, SEQ_LEN // 2])
def test_batches_hold_one_repeat_and_the_mask_marks_its_predictable_half(repeat):
    inputs, targets, mask, start = make_batch(32, torch.Generator().manual_seed(3), repeat)
    assert inputs.shape == targets.shape == mask.shape == (32, SEQ_LEN)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    for b in range(32):
        seq = torch.cat([inputs[b], targets[b, -1:]]).tolist()  # SEQ_LEN + 1 tokens
        assert seq[0] == BOS
        body = seq[1:]
        n = len(body) - len(set(body))  # each repeated token occurs exactly twice
        assert (repeat or n) == n
        assert MIN_REPEAT <= n <= MAX_REPEAT
        s = int(start[b])
        assert seq[s:s + n] == seq[s + n:s + 2 * n]
        expected = [s + n <= t <= s + 2 * n - 2 for t in range(SEQ_LEN)]
        assert mask[b].tolist() == expected


def test_training_runs_single_threaded_and_restores_the_thread_count():
    before = torch.get_num_threads()
    model, losses = train(steps=3, batch_size=4, progress=False)
    assert torch.get_num_threads() == before
    assert len(losses) == 3
    assert not model.training


def test_the_shipped_model_continues_repeats():
    model = load_induction_lm()
    assert accuracy(model, n=500) > MIN_ACCURACY
    for n in (MIN_REPEAT, MAX_REPEAT):
        assert accuracy(model, n=300, repeat=n) > MIN_ACCURACY


def test_the_shipped_model_cannot_predict_the_unrepeated_tokens():
    """An independent sanity check of the task: filler and first-copy tokens are random."""
    model = load_induction_lm()
    inputs, targets, mask, start = make_batch(300, torch.Generator().manual_seed(5))
    with torch.no_grad():
        pred = model(inputs).argmax(-1)  # (B, T)
    first = torch.arange(SEQ_LEN)[None, :] < start[:, None]  # filler before the first copy
    assert (pred == targets)[first].float().mean() < 0.2


def test_corruption_shuffles_the_first_copy_and_answers_follow_it():
    from attn_course.data.induction_lm import corrupt_first_copy, induction_answers

    g = torch.Generator().manual_seed(7)
    inputs, targets, mask, start = make_batch(16, g, repeat=8)
    clean_answers = induction_answers(inputs, start, 8)
    assert torch.equal(clean_answers[mask], targets[mask])  # induction = the task's targets
    corrupted = corrupt_first_copy(inputs, start, 8, g)
    for b in range(16):
        s = int(start[b])
        assert sorted(corrupted[b, s:s + 8].tolist()) == sorted(inputs[b, s:s + 8].tolist())
        assert torch.equal(corrupted[b, s + 8:], inputs[b, s + 8:])
        answers = induction_answers(corrupted, start, 8)[b]
        first = corrupted[b, s:s + 8].tolist()
        for t in range(s + 8, min(s + 16, SEQ_LEN)):  # a loop reference
            j = first.index(int(corrupted[b, t]))
            assert answers[t] == (first[j + 1] if j + 1 < 8 else -1)
