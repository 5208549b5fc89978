"""Training the order policy against a tiny frozen denoiser, and saving/loading it."""

from __future__ import annotations

import json
from typing import NamedTuple

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from merlin_mdm.errors import MdmError  # noqa: E402
from merlin_mdm.mdm.order import OrderTrainConfig, load_policy, save_policy, train_order  # noqa: E402
from merlin_mdm.mdm.order.features import order_inputs  # noqa: E402
from merlin_mdm.mdm.order.training import rollout, tau_at  # noqa: E402

pytestmark = pytest.mark.torch

VOCAB, MASK, PROMPT, ANSWER, HIDDEN = 6, 5, 2, 6, 8


class _Out(NamedTuple):
    logits: torch.Tensor
    hidden: torch.Tensor


class _TinyDenoiser(nn.Module):
    """A randomly initialised stand-in with the Denoiser's output contract."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(VOCAB, HIDDEN)
        self.pos = nn.Embedding(PROMPT + ANSWER, HIDDEN)
        self.head = nn.Linear(HIDDEN, VOCAB)

    def forward(self, x):
        h = torch.tanh(self.emb(x) + self.pos(torch.arange(x.shape[1])) + self.emb(x).mean(1, keepdim=True))
        logits = self.head(h)
        logits[..., MASK] = float("-inf")
        return _Out(logits, h)


class _TinyTask:
    vocab_size, mask_id, prompt_len, answer_len = VOCAB, MASK, PROMPT, ANSWER

    def sample(self, n, generator):
        return torch.randint(0, MASK, (n, PROMPT + ANSWER), generator=generator)

    def sample_split(self, n, generator, split):
        return self.sample(n, generator)


def _config(**kw):
    base = {"budget": 3, "rollouts": 2, "batch_size": 4, "iterations": 3, "d_model": 8, "n_heads": 2}
    return OrderTrainConfig(**{**base, **kw})


def test_training_runs_logs_finite_elbo_and_changes_the_policy():
    den = _TinyDenoiser().eval()
    torch.manual_seed(123)
    logs = []
    result = train_order(den, _TinyTask(), HIDDEN, _config(), progress=logs.append, log_every=1)
    assert result.iterations == 3 and len(logs) == 3
    assert all(torch.isfinite(torch.tensor(e["elbo_per_token"])) for e in logs)
    assert all(e["kl_per_token"] >= -1e-6 for e in logs)
    fresh = train_order(den, _TinyTask(), HIDDEN, _config(iterations=1)).policy
    assert any(not torch.equal(a, b) for a, b in zip(result.policy.parameters(), fresh.parameters(), strict=True))


def test_training_is_deterministic_under_a_seed():
    den = _TinyDenoiser().eval()
    a = train_order(den, _TinyTask(), HIDDEN, _config(seed=7))
    b = train_order(den, _TinyTask(), HIDDEN, _config(seed=7))
    assert all(torch.equal(x, y) for x, y in zip(a.policy.parameters(), b.policy.parameters(), strict=True))
    assert a.history == b.history


def test_rollout_reveals_every_answer_token_exactly_once_within_the_budget():
    den = _TinyDenoiser().eval()
    result = train_order(den, _TinyTask(), HIDDEN, _config(iterations=1))
    x0 = _TinyTask().sample(8, torch.Generator().manual_seed(0))
    trace = rollout(den, result.policy, result.posterior, x0, PROMPT, MASK, 3, 0.1, torch.Generator().manual_seed(1))
    assert trace.step_values.shape == (8, 3)
    assert torch.equal(trace.revealed.sum(-1), torch.full((8,), float(ANSWER)))
    assert bool((trace.revealed[:, 0] >= 1).all())
    assert bool((trace.log_q_r[:, -1] == 0).all()) and bool((trace.kl[:, -1] == 0).all())


def test_config_validation_names_the_problem():
    with pytest.raises(MdmError, match="budget"):
        OrderTrainConfig(budget=1)
    with pytest.raises(MdmError, match="rollouts"):
        OrderTrainConfig(budget=2, rollouts=1)
    with pytest.raises(MdmError, match="tau"):
        OrderTrainConfig(budget=2, tau=0.0)


def test_tau_anneals_geometrically_to_its_final_value():
    cfg = OrderTrainConfig(budget=2, tau=0.1, tau_start=1.0, iterations=100, anneal_frac=0.5)
    assert tau_at(cfg, 0) == pytest.approx(1.0)
    assert tau_at(cfg, 25) == pytest.approx(0.1**0.5)
    assert tau_at(cfg, 50) == pytest.approx(0.1) and tau_at(cfg, 99) == pytest.approx(0.1)
    assert tau_at(OrderTrainConfig(budget=2, tau=0.07), 10) == 0.07


def test_policy_save_load_round_trip(tmp_path):
    den = _TinyDenoiser().eval()
    result = train_order(den, _TinyTask(), HIDDEN, _config(iterations=2))
    save_policy(tmp_path / "pol", result.policy, result.posterior, {"budget": 3, "note": "x"})
    loaded = load_policy(tmp_path / "pol")
    assert loaded.meta["budget"] == 3 and loaded.meta["kind"] == "order_policy"
    assert json.loads((tmp_path / "pol" / "meta.json").read_text())["note"] == "x"
    x = torch.full((4, PROMPT + ANSWER), MASK)
    x[:, :PROMPT] = 1
    out = den(x)
    inputs = order_inputs(x, x == MASK, out.logits, out.hidden, 0, 3)
    with torch.no_grad():
        assert torch.equal(loaded.policy(inputs), result.policy(inputs))
    assert loaded.posterior is not None
    assert not any(p.name.endswith(".tmp") or ".tmp" in p.name for p in (tmp_path / "pol").iterdir())


def test_load_policy_errors_are_friendly(tmp_path):
    with pytest.raises(MdmError, match=r"policy\.pt is missing"):
        load_policy(tmp_path)
    (tmp_path / "denoiser.pt").write_bytes(b"")
    with pytest.raises(MdmError, match=r"policy\.pt is missing \(it holds a denoiser: pass that as --checkpoint"):
        load_policy(tmp_path)
    (tmp_path / "policy.pt").write_bytes(b"not a torch file")
    with pytest.raises(MdmError, match=r"is not a readable order policy \(damaged, truncated, .*: \S.*\); train it"):
        load_policy(tmp_path)
