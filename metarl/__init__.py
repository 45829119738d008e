"""metarl: meta-reinforcement learning with MAML on gymnasium 1.x, mujoco and torch.func."""

__version__ = "0.1.0"
