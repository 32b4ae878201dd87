"""PPO maths against values computed by hand (train/ppo/core.py)."""

import math

import pytest
import torch

from gpt2_rlhf.train.ppo import core
from gpt2_rlhf.train.sampling import token_logprobs

X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
M = torch.tensor([[1, 1, 0], [1, 0, 0]])  # real values: 1, 2 | 4


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol)


# ----------------------------------------------------------------------------- masked statistics


def test_masked_mean_ignores_padding():
    assert close(core.masked_mean(X, M), 7 / 3)  # (1 + 2 + 4) / 3
    assert close(core.masked_mean(X, M, dim=1), [1.5, 4.0])
    assert close(core.masked_mean(X, torch.zeros_like(M), dim=1), [0.0, 0.0])  # empty rows: 0, not NaN


def test_masked_var_bessel_and_biased():
    # values 1, 2, 4: mean 7/3, squared deviations 16/9 + 1/9 + 25/9 = 14/3
    assert close(core.masked_var(X, M), (14 / 3) / 2)
    assert close(core.masked_var(X, M, unbiased=False), (14 / 3) / 3)


def test_masked_whiten():
    std = math.sqrt(7 / 3)
    w = core.masked_whiten(X, M, eps=0.0)
    assert close(w, [[(1 - 7 / 3) / std, (2 - 7 / 3) / std, 0.0], [(4 - 7 / 3) / std, 0.0, 0.0]])
    w = core.masked_whiten(X, M, shift_mean=False, eps=0.0)
    assert close(w, [[(1 - 7 / 3) / std + 7 / 3, (2 - 7 / 3) / std + 7 / 3, 0.0], [(4 - 7 / 3) / std + 7 / 3, 0, 0]])
    # the real entries are standardised: mean 0, unbiased variance 1
    w = core.masked_whiten(X, M)
    assert close(core.masked_mean(w, M), 0.0) and close(core.masked_var(w, M), 1.0, tol=1e-4)


def test_padding_values_do_not_leak():
    junk = X.clone()
    junk[M == 0] = 1e6
    assert close(core.masked_whiten(junk, M), core.masked_whiten(X, M))
    assert close(core.masked_var(junk, M), core.masked_var(X, M))


# ----------------------------------------------------------------------------- log-probs, entropy, KL


def test_token_logprobs_with_temperature():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # p = (1/4, 3/4) at T = 1
    tok = torch.tensor([[1]])
    assert close(token_logprobs(logits, tok), [[math.log(0.75)]])
    # T = 0.5 doubles the logits: (0, 2 ln 3) -> p = (1/10, 9/10)
    assert close(token_logprobs(logits, tok, temperature=0.5), [[math.log(0.9)]])
    assert close(token_logprobs(logits, torch.tensor([[0]]), temperature=0.5), [[math.log(0.1)]])


def test_entropy_from_logits():
    assert close(core.entropy_from_logits(torch.zeros(1, 1, 4)), [[math.log(4.0)]])
    # p = (1/4, 3/4): H = -(1/4 ln 1/4 + 3/4 ln 3/4)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert close(core.entropy_from_logits(torch.tensor([[[0.0, math.log(3.0)]]])), [[h]])


def test_kl_estimators():
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    ref = torch.log(torch.tensor([[0.25, 0.5]]))
    # k1 = log pi - log ref
    assert close(core.kl_penalty(logp, ref, "k1"), [[math.log(2), -math.log(2)]])
    # k3 = (r - 1) - log r, r = ref / pi: r = 0.5 -> -0.5 + ln 2; r = 2 -> 1 - ln 2
    assert close(core.kl_penalty(logp, ref, "k3"), [[-0.5 + math.log(2), 1 - math.log(2)]])
    assert close(core.kl_penalty(logp, logp, "k3"), [[0.0, 0.0]])
    with pytest.raises(ValueError, match="k1' or 'k3"):
        core.kl_penalty(logp, ref, "k2")


def test_k1_and_k3_are_unbiased_estimates_of_the_same_kl():
    torch.manual_seed(0)
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.3, 0.3, 0.4])
    true_kl = (p * (p / q).log()).sum()
    x = torch.multinomial(p, 200_000, replacement=True)
    lp, lq = p.log()[x], q.log()[x]
    assert abs(core.kl_penalty(lp, lq, "k1").mean() - true_kl) < 0.01
    assert abs(core.kl_penalty(lp, lq, "k3").mean() - true_kl) < 0.01


# ----------------------------------------------------------------------------- rewards


def test_score_goes_to_the_last_real_token_with_padding():
    scores = torch.tensor([2.0, 3.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    r = core.per_token_rewards(scores, kl, mask, kl_coef=0.1)
    assert close(r, [[-0.01, -0.02, -0.03 + 2.0], [-0.05, -0.05 + 3.0, 0.0]])


def test_missing_eos_penalty():
    scores = torch.tensor([1.0, 2.0, -0.5])
    has_eos = torch.tensor([True, False, False])
    assert close(core.apply_missing_eos_penalty(scores, has_eos, -1.0), [1.0, 1.0, -1.5])
    assert close(core.apply_missing_eos_penalty(scores, has_eos, None), scores)


# ----------------------------------------------------------------------------- GAE


def test_gae_by_hand():
    # gamma 1, lambda 0.5; deltas: d2 = 1 - 0.1 = 0.9, d1 = 0.1 - 0.2 = -0.1, d0 = 0.2 - 0.5 = -0.3
    # A2 = 0.9, A1 = -0.1 + 0.5 * 0.9 = 0.35, A0 = -0.3 + 0.5 * 0.35 = -0.125
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.2, 0.1]])
    adv, ret = core.gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=0.5)
    assert close(adv, [[-0.125, 0.35, 0.9]])
    assert close(ret, [[0.375, 0.55, 1.0]])


def test_gae_episode_ends_at_the_last_real_token():
    # gamma 0.9, lambda 1; the padded column holds junk that must not be bootstrapped from
    # d1 = 2 + 0 - 1 = 1, d0 = 0 + 0.9 * 1 - 1 = -0.1; A1 = 1, A0 = -0.1 + 0.9 * 1 = 0.8
    rewards = torch.tensor([[0.0, 2.0, 5.0]])
    values = torch.tensor([[1.0, 1.0, 9.0]])
    adv, ret = core.gae(rewards, values, torch.tensor([[1, 1, 0]]), gamma=0.9, lam=1.0)
    assert close(adv, [[0.8, 1.0, 0.0]])
    assert close(ret, [[1.8, 2.0, 0.0]])


def test_gae_matches_the_reverse_loop():
    torch.manual_seed(0)
    B, R, gamma, lam = 4, 7, 0.99, 0.95
    rewards, values = torch.randn(B, R), torch.randn(B, R)
    lengths = torch.tensor([7, 3, 1, 5])
    mask = (torch.arange(R)[None] < lengths[:, None]).float()
    adv, ret = core.gae(rewards, values, mask, gamma, lam)
    for b in range(B):  # the textbook recursion, one episode at a time
        last, a = 0.0, torch.zeros(R)
        L = int(lengths[b])
        for t in reversed(range(L)):
            nv = values[b, t + 1] if t + 1 < L else 0.0
            last = rewards[b, t] + gamma * nv - values[b, t] + gamma * lam * last
            a[t] = last
        assert close(adv[b], a, tol=1e-4)
        assert close(ret[b, :L], a[:L] + values[b, :L], tol=1e-4)
        assert close(ret[b, L:], torch.zeros(R - L))


# ----------------------------------------------------------------------------- losses


def test_policy_loss_by_hand():
    # ratios 1.5, 1.5, 0.5, 0.5 with advantages +1, -1, +1, -1, clip 0.2; a padded 5th token
    new = torch.log(torch.tensor([[1.5, 1.5, 0.5, 0.5, 100.0]]))
    old = torch.zeros(1, 5)
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    loss, st = core.policy_loss(new, old, adv, mask, cliprange=0.2)
    # max(-A r, -A clip(r)): -1.2 (clipped), 1.5, -0.5, 0.8 (clipped)
    assert close(loss, (-1.2 + 1.5 - 0.5 + 0.8) / 4)
    assert close(st.clipfrac, 0.5)
    assert close(st.ratio_mean, 1.0)
    assert close(st.approx_kl, 0.5 * (2 * math.log(1.5) ** 2 + 2 * math.log(0.5) ** 2) / 4)


def test_policy_loss_gradient_is_zero_where_clipped():
    new = torch.log(torch.tensor([[1.5, 1.1]])).requires_grad_()
    loss, _ = core.policy_loss(new, torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2), 0.2)
    loss.backward()
    # token 0: clipped -> no gradient; token 1: d(-r)/d(log r) / 2 tokens = -1.1 / 2
    assert close(new.grad, [[0.0, -0.55]])


def test_value_loss_by_hand():
    values = torch.tensor([[0.5, -0.1, 7.0]])
    old = torch.zeros(1, 3)
    returns = torch.tensor([[1.0, 1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, clipfrac = core.value_loss(values, old, returns, mask, cliprange_value=0.2)
    # token 0: max((0.5-1)^2, (0.2-1)^2) = 0.64; token 1: inside the clip, (-0.1-1)^2 = 1.21
    assert close(loss, 0.5 * (0.64 + 1.21) / 2)
    assert close(clipfrac, 0.5)


# ----------------------------------------------------------------------------- KL controllers


def test_adaptive_kl_controller_by_hand():
    ctl = core.AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    ctl.update(current_kl=12.0, n_steps=100)  # error clipped to +0.2: x (1 + 0.2 * 100 / 10000)
    assert ctl.value == pytest.approx(0.1 * 1.002)
    ctl = core.AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    ctl.update(current_kl=3.0, n_steps=100)  # error -0.5 clipped to -0.2
    assert ctl.value == pytest.approx(0.1 * 0.998)
    ctl = core.AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    ctl.update(current_kl=6.6, n_steps=1000)  # error +0.1: x (1 + 0.1 * 0.1)
    assert ctl.value == pytest.approx(0.1 * 1.01)
    state = ctl.state_dict()
    other = core.AdaptiveKLController(0.5, 6.0, 10_000)
    other.load_state_dict(state)
    assert other.value == ctl.value


def test_fixed_kl_controller_stays_fixed():
    ctl = core.FixedKLController(0.1)
    ctl.update(100.0, 64)
    assert ctl.value == 0.1


def test_explained_variance():
    ret = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert core.explained_variance(ret, ret, mask) == pytest.approx(1.0)
    assert core.explained_variance(torch.zeros(1, 4) + 2.0, ret, mask) == pytest.approx(0.0)
