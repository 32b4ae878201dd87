"""Shared tensor helpers: padding conventions, EOS truncation, last-token pooling."""

from __future__ import annotations

import pytest
import torch

from gpt2_rlhf.train.modeling import last_token_index, position_ids_from_mask
from gpt2_rlhf.train.sampling import first_eos_mask


@pytest.mark.parametrize(
    "mask,expected",
    [([[1, 1, 1, 0, 0]], [2]),  # right padding
     ([[0, 0, 1, 1, 1]], [4]),  # left padding
     ([[0, 1, 1, 0, 0]], [2]),  # left-padded prompt + right-padded response
     ([[1, 0, 0, 0, 0]], [0])],
)
def test_last_token_index(mask, expected):
    assert last_token_index(torch.tensor(mask)).tolist() == expected


def test_position_ids_skip_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]]


def test_first_eos_mask_keeps_up_to_and_including_the_first_eos():
    eos = 9
    ids = torch.tensor([[5, 9, 7, 9], [5, 6, 7, 8], [9, 1, 2, 3]])
    keep, has_eos = first_eos_mask(ids, eos)
    assert keep.tolist() == [[True, True, False, False], [True, True, True, True], [True, False, False, False]]
    assert has_eos.tolist() == [True, False, True]


def test_sequence_scores_read_the_last_real_token_whatever_the_padding():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from gpt2_rlhf.train.modeling import sequence_scores

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=20, n_positions=16, n_embd=16, n_layer=1, n_head=2, pad_token_id=0)
    model = GPT2ForSequenceClassification(cfg).eval()
    ids = torch.tensor([[3, 4, 5]])
    plain = sequence_scores(model, ids, torch.ones_like(ids))
    left = sequence_scores(model, torch.tensor([[0, 0, 3, 4, 5]]), torch.tensor([[0, 0, 1, 1, 1]]))
    right = sequence_scores(model, torch.tensor([[3, 4, 5, 0, 0]]), torch.tensor([[1, 1, 1, 0, 0]]))
    # a pad id that is also a real token in the text must not confuse the pooling
    both = sequence_scores(model, torch.tensor([[0, 3, 4, 5, 0]]), torch.tensor([[0, 1, 1, 1, 0]]))
    torch.testing.assert_close(left, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(right, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both, plain, atol=1e-5, rtol=1e-5)
    shorter = sequence_scores(model, torch.tensor([[3, 4]]), torch.ones(1, 2, dtype=torch.long))
    assert not torch.allclose(shorter, plain)
