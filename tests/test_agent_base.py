"""A fifth algorithm written against rlpg.agent_base.AgentBase as its loss and update alone: it trains through
`rlpg.train` as one run and as K seeds in one process (seed k = the single run of seed k), and saves and resumes its
optimizer state like the built-in agents."""

from dataclasses import dataclass

import torch

import rlpg
from rlpg import checkpoint
from rlpg.agent_base import AgentBase
from rlpg.agents import ALGOS
from rlpg.axes import SINGLE
from rlpg.config import AgentConfig
from rlpg.optim import GradNormMeter


@dataclass
class A2CConfig(AgentConfig):
    """Advantage actor-critic: one gradient step per rollout on the whole batch."""

    learning_rate: float = 7e-4
    vf_coef: float = 0.5


class A2C(AgentBase):
    def __init__(self, policy, config, axis=SINGLE):
        super().__init__(policy, config, axis)
        self.params = self.trainable(policy.named_parameters())
        self.optimizer = self.add_optimizer("optimizer", self.params)

    def update(self, batch, progress):
        lr = self.anneal(progress)
        ax = self.axis
        idx, count = ax.whole(ax.size(batch))
        mb = ax.index(batch, idx)
        adv = ax.normalize(mb.advantages)
        pg_loss = -ax.mean(self.policy.dist(mb.obs).log_prob(mb.actions) * adv, count)
        v_loss = 0.5 * ax.mean((self.policy.value(mb.obs) - mb.returns) ** 2, count)
        meter = GradNormMeter([n for n, _ in self.params])
        meter.add(*self.step(self.optimizer, pg_loss + self.config.vf_coef * v_loss, self.params))
        return {"train/policy_loss": pg_loss.detach(), "train/value_loss": v_loss.detach(),
                **self.common_metrics(batch, lr, meter)}


def test_a_fifth_algorithm_is_its_loss_and_update_alone(tmp_path, monkeypatch):
    monkeypatch.setitem(ALGOS, "a2c", (A2C, A2CConfig))
    kw = dict(total_steps=2048, num_envs=8, num_steps=32, eval_episodes=4, num_eval_envs=2, progress=False,
              logdir=str(tmp_path), backend="torch")
    one = rlpg.train("a2c", "CartPole-v1", seed=2, run_name="one", **kw)
    many = rlpg.train("a2c", "CartPole-v1", seeds=[1, 2], run_name="many", **kw)
    mine = checkpoint.load(many.run_dirs[1] / "last.pt")
    for name, p in one.policy.state_dict().items():
        torch.testing.assert_close(mine["policy"][name], p, rtol=1e-4, atol=1e-5)
    single = checkpoint.load(one.run_dir / "last.pt")
    assert set(single["agent"]) == set(mine["agent"]) == {"optimizer"}  # its optimizer state, named as it named it
    assert len(single["agent"]["optimizer"]["state"]) == len(list(one.policy.parameters()))
    metrics = (one.run_dir / "progress.csv").read_text().splitlines()[0].split(",")
    assert {"train/policy_loss", "train/explained_variance", "train/learning_rate", "grad_norm/total",
            "grad_norm/critic.0.weight"} <= set(metrics)
    resumed = rlpg.train(resume=one.run_dir, total_steps=4096)
    assert resumed.global_step == 4096 and not resumed.interrupted
