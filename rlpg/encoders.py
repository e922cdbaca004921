"""Convolutional encoders for image observations, chosen from the observation space.

An observation space is an image when it is a rank-3 `Box` of uint8 (pixels, 0..255) or bool (MinAtar's
channels): [C, H, W] or [H, W, C], the smaller outer dimension being the channels (the rule SB3 uses). Images are
stored as they come (uint8 / bool) in the rollout and turned into floats in [0, 1] only for the forward pass.

Frames of 36 pixels and more get the Nature-DQN torso (Mnih et al. 2015; the encoder of PPO on Atari in Schulman
et al. 2017 and CleanRL's ppo_atari): three convolutions and a 512-unit layer. Smaller frames (MinAtar's 10 x 10)
get MinAtar's own network (Young & Tian 2019): one 3 x 3 convolution of 16 channels and a 128-unit layer.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn


def image_shape(space: gym.Space) -> tuple[int, int, int] | None:
    """(C, H, W) when `space` holds images, else None."""
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 3:
        return None
    if space.dtype not in (np.uint8, np.bool_):
        return None
    shape = tuple(int(s) for s in space.shape)
    if channels_last(space):
        return shape[2], shape[0], shape[1]
    return shape[0], shape[1], shape[2]


def channels_last(space: gym.spaces.Box) -> bool:
    """Whether an image space is [H, W, C]: its last dimension is smaller than its first."""
    return space.shape[-1] < space.shape[0]


def to_float(obs: Tensor, space: gym.spaces.Box, dtype: torch.dtype) -> Tensor:
    """[B, *image_shape] uint8 / bool -> [B, C, H, W] in [0, 1] of `dtype`."""
    if channels_last(space):
        obs = obs.permute(0, 3, 1, 2)
    x = obs.to(dtype)
    return x / 255.0 if space.dtype == np.uint8 else x


def _init(layer: nn.Conv2d | nn.Linear) -> nn.Module:
    nn.init.orthogonal_(layer.weight, math.sqrt(2))
    nn.init.zeros_(layer.bias)
    return layer


class ImageEncoder(nn.Module):
    """[B, C, H, W] float -> [B, out_dim] features (ReLU): Nature-DQN for H, W >= 36, MinAtar's network below."""

    def __init__(self, chw: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = chw
        if min(h, w) >= 36:
            convs: list[nn.Module] = [_init(nn.Conv2d(c, 32, 8, stride=4)), nn.ReLU(),
                                      _init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
                                      _init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU()]
            self.out_dim = 512
        else:
            convs = [_init(nn.Conv2d(c, 16, 3, stride=1)), nn.ReLU()]
            self.out_dim = 128
        self.convs = nn.Sequential(*convs, nn.Flatten())
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, c, h, w)).shape[1]
        self.fc = nn.Sequential(_init(nn.Linear(flat, self.out_dim)), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.convs(x))
