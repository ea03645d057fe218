"""Tiny models in the real layouts, built in code and saved with `save_pretrained`.

The tests and the CPU run of the GPU benchmark write them to a folder and load them through the
same code as an operator's folder. Weights are random (seeded): they check the computation and the
plumbing, not picture quality. Sizes are kept truly small (well under 1 M parameters each).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .common import write_hashes

_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


def clip_tokenizer(max_length: int = 16) -> Any:
    """A character-level CLIP BPE tokenizer (no merges): real tokenizer code, a tiny vocabulary."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for c in _CHARS:
            vocab[c + suffix] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def clip_text_encoder(hidden: int = 16, vocab_size: int = 74, max_length: int = 16) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=max_length,
                         projection_dim=hidden, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                         pad_token_id=vocab_size - 1)
    return CLIPTextModel(cfg).eval()


def _index(folder: Path, components: dict[str, tuple[str, str]], cls: str) -> None:
    data: dict[str, Any] = {"_class_name": cls, "_diffusers_version": "0.42.1"}
    data.update({k: list(v) for k, v in components.items()})
    (folder / "model_index.json").write_text(json.dumps(data, indent=1))


def write_tiny_sd(folder: str | Path, *, vae: str = "tiny", scheduler: str = "lcm", seed: int = 0,
                  cross_dim: int = 16) -> Path:
    """A Stable-Diffusion folder (unet, vae or vae_tiny, text_encoder, tokenizer, scheduler)."""
    from diffusers import (
        AutoencoderKL,
        AutoencoderTiny,
        EulerAncestralDiscreteScheduler,
        LCMScheduler,
        UNet2DConditionModel,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_dim, attention_head_dim=2, norm_num_groups=4)
    unet.save_pretrained(folder / "unet")
    components: dict[str, tuple[str, str]] = {"unet": ("diffusers", "UNet2DConditionModel")}
    if vae == "tiny":
        AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                        num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1),
                        latent_channels=4).save_pretrained(folder / "vae_tiny")
        components["vae_tiny"] = ("diffusers", "AutoencoderTiny")
    else:
        AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
                      down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                      layers_per_block=1, norm_num_groups=4, sample_size=32).save_pretrained(folder / "vae")
        components["vae"] = ("diffusers", "AutoencoderKL")
    clip_text_encoder(hidden=cross_dim).save_pretrained(folder / "text_encoder")
    components["text_encoder"] = ("transformers", "CLIPTextModel")
    clip_tokenizer().save_pretrained(folder / "tokenizer")
    components["tokenizer"] = ("transformers", "CLIPTokenizer")
    sched: Any
    if scheduler == "lcm":
        sched = LCMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1)
        components["scheduler"] = ("diffusers", "LCMScheduler")
    else:
        sched = EulerAncestralDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                                timestep_spacing="trailing", steps_offset=1)
        components["scheduler"] = ("diffusers", "EulerAncestralDiscreteScheduler")
    sched.save_pretrained(folder / "scheduler")
    _index(folder, components, "StableDiffusionPipeline")
    write_hashes(folder)
    return folder


def tiny_wan_config(layers: int = 2, heads: int = 2, head_dim: int = 12, text_dim: int = 16,
                    latent_channels: int = 4) -> dict[str, Any]:
    return dict(patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim,
                in_channels=latent_channels, out_channels=latent_channels, text_dim=text_dim, freq_dim=16,
                ffn_dim=2 * heads * head_dim, num_layers=layers, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64)


def write_tiny_wan(folder: str | Path, *, seed: int = 0, transformer_config: dict[str, Any] | None = None,
                   vae_full: bool = False) -> Path:
    """A Wan2.1-layout folder: transformer (WanTransformer3DModel), vae (AutoencoderKLWan), a text encoder."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = transformer_config or tiny_wan_config()
    WanTransformer3DModel(**cfg).save_pretrained(folder / "transformer")
    z = int(cfg["in_channels"])
    if vae_full:  # Wan2.1's VAE config (the benchmark at full size)
        AutoencoderKLWan().save_pretrained(folder / "vae")
    else:
        AutoencoderKLWan(base_dim=4, z_dim=z, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                         temperal_downsample=[False, False, False], latents_mean=[0.0] * z, latents_std=[1.0] * z,
                         scale_factor_temporal=1, scale_factor_spatial=8).save_pretrained(folder / "vae")
    clip_text_encoder(hidden=int(cfg["text_dim"])).save_pretrained(folder / "text_encoder")
    clip_tokenizer().save_pretrained(folder / "tokenizer")
    FlowMatchEulerDiscreteScheduler(shift=5.0).save_pretrained(folder / "scheduler")
    _index(folder, {"transformer": ("diffusers", "WanTransformer3DModel"), "vae": ("diffusers", "AutoencoderKLWan"),
                    "text_encoder": ("transformers", "CLIPTextModel"), "tokenizer": ("transformers", "CLIPTokenizer"),
                    "scheduler": ("diffusers", "FlowMatchEulerDiscreteScheduler")}, "WanPipeline")
    write_hashes(folder)
    return folder
