"""The learned generation order: a policy over unmasking vectors trained by variational inference.

Modules: :mod:`.features` (what the networks see), :mod:`.networks` (policy and posterior),
:mod:`.bernoulli` (the two distributions and their closed forms), :mod:`.policies` (policy kinds: how the
policy's outputs become reveal sets), :mod:`.elbo` (the ELBO and its gradient
estimator), :mod:`.training` (the training loop), :mod:`.selection` (keeping the best validated iterate),
:mod:`.checkpoint` (save/load) and :mod:`.lineage` (which stages led to a policy, for its method label). The
sampler that uses a trained policy is :class:`merlin_mdm.mdm.samplers.learned.LearnedSampler`. See
docs/mdm-order-learning.md.
"""

from __future__ import annotations

from merlin_mdm.mdm.order.checkpoint import LoadedPolicy, load_policy, save_policy
from merlin_mdm.mdm.order.networks import OrderNet, OrderNetConfig
from merlin_mdm.mdm.order.policies import POLICY_KINDS, RevealPolicy, make_reveal_policy
from merlin_mdm.mdm.order.training import OrderTrainConfig, OrderTrainResult, train_order

__all__ = [
    "POLICY_KINDS",
    "LoadedPolicy",
    "OrderNet",
    "OrderNetConfig",
    "OrderTrainConfig",
    "OrderTrainResult",
    "RevealPolicy",
    "load_policy",
    "make_reveal_policy",
    "save_policy",
    "train_order",
]
