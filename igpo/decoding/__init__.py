"""Diffusion decoding: the one loop used by evaluation, RL rollouts and inpainting."""

from igpo.decoding.config import DecodeConfig, DecodeOverrides
from igpo.decoding.sampler import GenerateOutput, generate

__all__ = ["DecodeConfig", "DecodeOverrides", "GenerateOutput", "generate"]
