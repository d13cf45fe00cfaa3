"""Pipeline folders laid out as eight Hugging Face Hub repositories ship them, with random weights.

Each builder writes the repository's folder and file names and its config JSON texts (model_index.json,
scheduler, unet, vae/vqvae, text encoders, tokenizers, feature extractor), with only the size fields shrunk
so that a CPU forward pass takes milliseconds. Everything that decides behaviour is kept as the Hub has it:
class names, `_diffusers_version`, prediction_type, the beta schedule and num_train_timesteps, scaling_factor
(or its absence), force_upcast, addition_embed_type and the SDXL time-embedding sizes, `torch_dtype` of the
text encoder configs, `[null, null]` entries, `requires_safety_checker`, `force_zeros_for_empty_prompt`.

Where the texts come from (each config dict below names its source in a comment):
- git mirrors of the Hub repositories, read with `git show` (LFS pointers only, no weights):
  github.com/HDRJ-One/runwayml-stable-diffusion-v1-5 (branches main and fp16),
  github.com/wswplay/stable-diffusion-v1-4 (commit 133a221, upstream main "Add non_ema checkpoints (#230)";
  the mirror's own merge commit on top of it is not used),
  github.com/jack-op11/stable-diffusion-2-1 (one-commit snapshot, Feb 2023),
  github.com/jack-op11/stable-diffusion-2-1-base (main at 88bb1a4, Dec 2022),
  github.com/andrewcchoi/stabilityai-stable-diffusion-xl-base-1.0 (main at bf71498, Aug 2023);
- huggingface.co file pages stored in the search tool's docs corpus (google/ddpm-cifar10-32,
  CompVis/ldm-celebahq-256), and, where no verbatim text was found, a reconstruction that says so.

Not written: the single-file checkpoints at the repositories' roots (v1-5-pruned*.ckpt/.safetensors,
v2-1_*.ckpt, sd_xl_base_1.0*.safetensors), onnx/openvino/flax exports, `non_ema` variants, README/images,
the legacy `modeling_ddpm.py` (ddpm-cifar10-32) and `run.py` (ldm-celebahq-256), and the safety checker
folders (model_index.json still names StableDiffusionSafetyChecker; load with `safety_checker=None`).

Caveat (SD 1.x): StableDiffusionPipeline rewrites a unet's sample_size to 64 (with a deprecation warning)
when its config says `_diffusers_version` < 0.9.0 and sample_size < 64. The Hub's SD 1.4/1.5 unet configs
(versions 0.2.2 / 0.6.0) say 64, so this never fires on them; on these shrunk folders (sample_size 8, the
versions kept verbatim) it does, and `pipe.unet.config.sample_size` reads 64 after loading the pipeline.
Read the size from unet/config.json, or load the UNet alone, to get the shrunk 8 (EXPECTED's image_size 64).

Tokenizers: the real CLIP vocabulary has 49408 entries; each tokenizer here is a small valid CLIP BPE written by
`lab.targets.text.build_tokenizer`, its two special tokens then moved to the end of the vocabulary as in CLIP
(bos = V-2, eos = V-1), so that CLIP's legacy pooling (`eos_token_id == 2` in every SD text-encoder config: the
pooled token is the argmax of the ids) still lands on the end-of-text token. tokenizer_config.json and
special_tokens_map.json keep the real texts except `model_max_length` (77 -> 16, the shrunk text encoders'
`max_position_embeddings`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

HUB_LAYOUTS = (
    "google/ddpm-cifar10-32",
    "CompVis/ldm-celebahq-256",
    "CompVis/stable-diffusion-v1-4",
    "runwayml/stable-diffusion-v1-5",
    "runwayml/stable-diffusion-v1-5@fp16",
    "stabilityai/stable-diffusion-2-1",
    "stabilityai/stable-diffusion-2-1-base",
    "stabilityai/stable-diffusion-xl-base-1.0",
)

# image_size: the pixel side of the images the shrunk model takes (unet sample_size x the autoencoder's
# downsampling). scaling_factor: the latent scale the model was trained with; None for the LDM, whose vqvae
# config states none (its UNet saw the VQ encoder's raw output). SD 1.5's and SD 2.x's vae configs state none
# either, but AutoencoderKL's class default 0.18215 is their published scale.
EXPECTED = {
    "google/ddpm-cifar10-32": {
        "pipeline": "DDPMPipeline",
        "prediction_type": "epsilon",
        "scheduler": "DDPMScheduler",
        "image_size": 32,
        "channels": 3,
        "scaling_factor": None,
        "conditional": False,
    },
    "CompVis/ldm-celebahq-256": {
        "pipeline": "LDMPipeline",
        "prediction_type": "epsilon",
        "scheduler": "DDIMScheduler",
        "image_size": 32,
        "channels": 3,
        "scaling_factor": None,
        "conditional": False,
    },
    "CompVis/stable-diffusion-v1-4": {
        "pipeline": "StableDiffusionPipeline",
        "prediction_type": "epsilon",
        "scheduler": "PNDMScheduler",
        "image_size": 64,
        "channels": 3,
        "scaling_factor": 0.18215,
        "conditional": True,
    },
    "runwayml/stable-diffusion-v1-5": {
        "pipeline": "StableDiffusionPipeline",
        "prediction_type": "epsilon",
        "scheduler": "PNDMScheduler",
        "image_size": 64,
        "channels": 3,
        "scaling_factor": 0.18215,
        "conditional": True,
    },
    "runwayml/stable-diffusion-v1-5@fp16": {
        "pipeline": "StableDiffusionPipeline",
        "prediction_type": "epsilon",
        "scheduler": "PNDMScheduler",
        "image_size": 64,
        "channels": 3,
        "scaling_factor": 0.18215,
        "conditional": True,
    },
    "stabilityai/stable-diffusion-2-1": {
        "pipeline": "StableDiffusionPipeline",
        "prediction_type": "v_prediction",
        "scheduler": "DDIMScheduler",
        "image_size": 96,
        "channels": 3,
        "scaling_factor": 0.18215,
        "conditional": True,
    },
    "stabilityai/stable-diffusion-2-1-base": {
        "pipeline": "StableDiffusionPipeline",
        "prediction_type": "epsilon",
        "scheduler": "PNDMScheduler",
        "image_size": 64,
        "channels": 3,
        "scaling_factor": 0.18215,
        "conditional": True,
    },
    "stabilityai/stable-diffusion-xl-base-1.0": {
        "pipeline": "StableDiffusionXLPipeline",
        "prediction_type": "epsilon",
        "scheduler": "EulerDiscreteScheduler",
        "image_size": 128,
        "channels": 3,
        "scaling_factor": 0.13025,
        "conditional": True,
    },
}

MAX_LENGTH = 16  # shrunk max_position_embeddings / model_max_length (77 on the Hub)
CAPTIONS = ["a photo of a cat", "a painting of a dog", "an astronaut riding a horse", "a portrait of a person"]

# ----------------------------------------------------------------------------- texts shared by several repos

# CLIP ViT-L/14 tokenizer texts, identical in SD 1.4 main, SD 1.5 main and fp16, SDXL tokenizer/
# (same blob 2c2130b5 for special_tokens_map.json in all four mirrors).
CLIP_L_SPECIAL_TOKENS_MAP = {
    "bos_token": {
        "content": "<|startoftext|>",
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    },
    "eos_token": {
        "content": "<|endoftext|>",
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    },
    "pad_token": "<|endoftext|>",
    "unk_token": {
        "content": "<|endoftext|>",
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    },
}
# OpenCLIP ViT-H/bigG tokenizers (SD 2.1, SD 2.1-base tokenizer/, SDXL tokenizer_2/, blob ae0c5be6): pad "!".
OPENCLIP_SPECIAL_TOKENS_MAP = {**copy.deepcopy(CLIP_L_SPECIAL_TOKENS_MAP), "pad_token": "!"}


def _added(content):
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }


def _tokenizer_config(name_or_path=None, pad="<|endoftext|>", clean_up=False, special_map_file=True):
    """The Hub's tokenizer_config.json texts (all share this shape; key order as in the files)."""
    cfg = {"add_prefix_space": False, "bos_token": _added("<|startoftext|>")}
    if clean_up:
        cfg["clean_up_tokenization_spaces"] = True
    cfg |= {"do_lower_case": True, "eos_token": _added("<|endoftext|>"), "errors": "replace"}
    cfg["model_max_length"] = MAX_LENGTH  # 77 on the Hub
    if name_or_path is not None:
        cfg["name_or_path"] = name_or_path
    cfg["pad_token"] = pad
    if special_map_file:
        cfg["special_tokens_map_file"] = "./special_tokens_map.json"
    cfg |= {"tokenizer_class": "CLIPTokenizer", "unk_token": _added("<|endoftext|>")}
    return cfg


# feature_extractor/preprocessor_config.json: the same blob (5294955f) in SD 1.4, SD 1.5 (main and fp16),
# SD 2.1 and SD 2.1-base mirrors; verbatim.
PREPROCESSOR_CONFIG = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}

# ----------------------------------------------------------------------------- the shrunk sizes

# Every builder shrinks the same way (the per-builder docstrings list which fields):
# UNet: block_out_channels 320/640/1280/1280 -> 8/16/16/16 (same number of levels and block types),
# layers_per_block 2 -> 1, norm_num_groups 32 -> 4, attention heads to fit, sample_size / 8.
# Autoencoders: block_out_channels -> 8/16/16/16 (SD) or 8/16/16 (LDM vqvae), layers_per_block 1, norm_num_groups 4.
# Text encoders: hidden_size 768/1024/1280 -> 32 (SDXL: 16 and 32), intermediate 4 x hidden, 2 heads, 2-3 layers,
# max_position_embeddings 77 -> 16, vocab_size 49408 -> the small tokenizer's size.
SD_UNET_SIZES = {"block_out_channels": [8, 16, 16, 16], "layers_per_block": 1, "norm_num_groups": 4}
SD_VAE_SIZES = {"block_out_channels": [8, 16, 16, 16], "layers_per_block": 1, "norm_num_groups": 4}


def _text_encoder_sizes(hidden, layers, vocab):
    return {
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_attention_heads": 2,
        "num_hidden_layers": layers,
        "max_position_embeddings": MAX_LENGTH,
        "vocab_size": vocab,
    }


def _shrunk(cfg: dict, **sizes) -> dict:
    """A copy of `cfg` with the size fields replaced; fields the real text lacks are appended at the end."""
    out = copy.deepcopy(cfg)
    for k, v in sizes.items():
        out[k] = v
    return out


# ----------------------------------------------------------------------------- writing


def _write_json(path: Path, cfg: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=2) + "\n")


def _write_weights(module, folder: Path, stem: str, files) -> None:
    """Write `module`'s state dict as `files`: (suffix, dtype) pairs, suffix like '.safetensors', '.fp16.bin'."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = module.state_dict()
    for suffix, dtype in files:
        sd = {k: v.detach().to(dtype).contiguous().clone() for k, v in state.items()}
        path = folder / f"{stem}{suffix}"
        if suffix.endswith(".safetensors"):
            save_file(sd, str(path), metadata={"format": "pt"})
        else:
            torch.save(sd, str(path))


def _files(kind: str, variant_only: bool):
    """Weight files per layout: 'both' (.bin and .safetensors, fp32, plus the fp16 variants the main branches
    of SD 1.x ship), 'safetensors+fp16' (SDXL), 'bin' (fp32 .bin only), 'fp16bin' (the SD 1.5 fp16 branch:
    .bin files holding fp16 tensors). variant_only: only *.fp16.safetensors."""
    import torch

    f32, f16 = torch.float32, torch.float16
    if variant_only:
        return [(".fp16.safetensors", f16)]
    return {
        "both": [(".bin", f32), (".safetensors", f32), (".fp16.bin", f16), (".fp16.safetensors", f16)],
        "bin+safetensors": [(".bin", f32), (".safetensors", f32)],
        "safetensors+fp16": [(".safetensors", f32), (".fp16.safetensors", f16)],
        "bin": [(".bin", f32)],
        "fp16bin": [(".bin", f16)],
    }[kind]


def _diffusers_model(cls, cfg: dict, seed: int):
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
    return model.eval()


def _write_diffusers(cls, cfg: dict, folder: Path, files, seed: int) -> None:
    model = _diffusers_model(cls, cfg, seed)
    _write_weights(model, folder, "diffusion_pytorch_model", files)
    _write_json(folder / "config.json", cfg)


def _write_text_encoder(cls_name: str, cfg: dict, folder: Path, files, seed: int) -> None:
    import torch
    import transformers

    config = transformers.CLIPTextConfig.from_dict(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, cls_name)(config).float().eval()
    for suffix, dtype in files:  # model.safetensors but pytorch_model.bin, as transformers names them
        stem = "model" if suffix.endswith(".safetensors") else "pytorch_model"
        _write_weights(model, folder, stem, [(suffix, dtype)])
    _write_json(folder / "config.json", cfg)


def _write_tokenizer(folder: Path, tokenizer_config: dict, special_tokens_map: dict) -> int:
    """A small CLIP BPE (specials moved to the end, as in CLIP) with the real config texts; returns its size."""
    from lab.targets.text import SPECIAL, build_tokenizer

    build_tokenizer(CAPTIONS, 256, MAX_LENGTH, folder)
    vocab = json.loads((folder / "vocab.json").read_text())
    order = [t for t in sorted(vocab, key=vocab.get) if t not in SPECIAL] + list(SPECIAL)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(order)}))
    _write_json(folder / "tokenizer_config.json", tokenizer_config)
    _write_json(folder / "special_tokens_map.json", special_tokens_map)
    return len(order)


def _folder(repo: str, root: Path) -> Path:
    return Path(root) / repo.replace("/", "__").replace("@", "__")


# ----------------------------------------------------------------------------- google/ddpm-cifar10-32

# model_index.json: RECONSTRUCTED. The Hub lists it at 180 bytes, last changed in "update config" (7a4db4c,
# Jul 20 2022; https://huggingface.co/google/ddpm-cifar10-32/tree/refs%2Fpr%2F14). Its earlier text
# (https://huggingface.co/google/ddpm-cifar10-32/blob/33616ab/model_index.json) named "_module" and
# "UNetUnconditionalModel"; this is the DDPMPipeline/DDPMScheduler/UNet2DModel form of the same era, with the
# version of the sibling config.json ("0.0.4"; "0.1.x" would give the same 180 bytes).
CIFAR_MODEL_INDEX = {
    "_class_name": "DDPMPipeline",
    "_diffusers_version": "0.0.4",
    "scheduler": ["diffusers", "DDPMScheduler"],
    "unet": ["diffusers", "UNet2DModel"],
}
# config.json: the values of the Hub's file as re-saved from google/ddpm-cifar10-32 by diffusers 0.5.0.dev0
# (https://huggingface.co/newsyctw/res_DDPM-CIFAR10-32_CIFAR10_ep50_c1.0_p0.5_NONE-FASHION_new-set/blame/main/unet/config.json,
# whose _name_or_path is the google/ddpm-cifar10-32 snapshot), less the keys that re-save added, with the
# original's "_diffusers_version": "0.0.4" as third-party copies of the Hub file quote it. RECONSTRUCTED, but
# its length, 699 bytes, is the size the Hub lists for config.json ("convert weights", cf6443d).
CIFAR_UNET = {
    "_class_name": "UNet2DModel",
    "_diffusers_version": "0.0.4",
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
# scheduler_config.json: verbatim values from https://huggingface.co/google/ddpm-cifar10-32/blob/refs%2Fpr%2F8/scheduler_config.json
# (there "_diffusers_version": "0.1.0"); main's last change ("add images", 06b5594) is 256 bytes, the same
# length, and copies of main quote "0.1.1". Note variance_type "fixed_large" and no prediction_type (epsilon).
CIFAR_SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "_diffusers_version": "0.1.1",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": True,
    "num_train_timesteps": 1000,
    "trained_betas": None,
    "variance_type": "fixed_large",
}


def build_ddpm_cifar10_32(folder: Path, variant_only: bool = False, seed: int = 0) -> Path:
    """google/ddpm-cifar10-32: a FLAT folder (no unet/ or scheduler/ subfolders): config.json (the UNet),
    scheduler_config.json, model_index.json, diffusion_pytorch_model.bin and .safetensors at the root.
    diffusers loads it because `load_sub_model` falls back to the root when a component's subfolder is absent.

    Shrunk: block_out_channels [128, 256, 256, 256] -> [8, 16, 16, 16], layers_per_block 2 -> 1,
    norm_num_groups 32 -> 4. Kept: sample_size 32, every other field."""
    from diffusers import UNet2DModel

    unet = _shrunk(CIFAR_UNET, block_out_channels=[8, 16, 16, 16], layers_per_block=1, norm_num_groups=4)
    _write_diffusers(UNet2DModel, unet, folder, _files("bin+safetensors", variant_only), seed)
    _write_json(folder / "scheduler_config.json", CIFAR_SCHEDULER)
    _write_json(folder / "model_index.json", CIFAR_MODEL_INDEX)
    return folder


# ----------------------------------------------------------------------------- CompVis/ldm-celebahq-256

# model_index.json: RECONSTRUCTED (228 bytes on the Hub, https://huggingface.co/CompVis/ldm-celebahq-256/tree/03978f2;
# this text is 228 bytes with a 5-character version).
LDM_MODEL_INDEX = {
    "_class_name": "LDMPipeline",
    "_diffusers_version": "0.0.4",
    "scheduler": ["diffusers", "DDIMScheduler"],
    "unet": ["diffusers", "UNet2DModel"],
    "vqvae": ["diffusers", "VQModel"],
}
# unet/config.json: RECONSTRUCTED from a third-party copy of the Hub values (a Python dict in a DDPM-unlearning
# project's config, found by the search tool's code corpus without a citable repository name). Not verified.
LDM_UNET = {
    "_class_name": "UNet2DModel",
    "_diffusers_version": "0.0.4",
    "act_fn": "silu",
    "attention_head_dim": 32,
    "block_out_channels": [224, 448, 672, 896],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 64,
    "time_embedding_type": "positional",
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
# scheduler/scheduler_config.json: RECONSTRUCTED from the same third-party copy (DDIMScheduler, scaled_linear
# 0.0015 .. 0.0195). On the Hub the file dates from the first upload (c9c864b, Jul 15 2022) and may use the
# legacy keys "timesteps"/"timestep_values" (a copy derived from it, tpremoli/MLD-CelebA-128-80k-pipeline,
# carries both); this text uses num_train_timesteps, whose value is the class default anyway.
LDM_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.0.4",
    "beta_end": 0.0195,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.0015,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "trained_betas": None,
}
# vqvae/config.json: verbatim, https://huggingface.co/CompVis/ldm-celebahq-256/blob/main/vqvae/config.json
# (486 bytes, "upload new weights" 03978f2). NO scaling_factor (refs/pr/5, unmerged, adds "scaling_factor": 1.0),
# and no norm_num_groups (class default 32).
LDM_VQVAE = {
    "_class_name": "VQModel",
    "_diffusers_version": "0.1.2",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
    "in_channels": 3,
    "latent_channels": 3,
    "layers_per_block": 2,
    "num_vq_embeddings": 8192,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
}


def build_ldm_celebahq_256(folder: Path, variant_only: bool = False, seed: int = 0) -> Path:
    """CompVis/ldm-celebahq-256: LDMPipeline with unet/, vqvae/ (VQModel, no scaling_factor), scheduler/
    (DDIMScheduler). Weights: diffusion_pytorch_model.bin only, as on the Hub.

    Shrunk: unet block_out_channels [224, 448, 672, 896] -> [8, 16, 24, 32], layers_per_block 2 -> 1,
    norm_num_groups 32 -> 4, attention_head_dim 32 -> 4, sample_size 64 -> 8; vqvae block_out_channels
    [128, 256, 512] -> [8, 16, 16], layers_per_block 2 -> 1, num_vq_embeddings 8192 -> 16, sample_size 256 -> 32,
    and "norm_num_groups": 4 APPENDED (the real text has none; the class default 32 does not divide 8).
    Pixel side: 8 x 4 (three vqvae levels) = 32."""
    from diffusers import UNet2DModel, VQModel

    files = _files("bin", variant_only)
    unet = _shrunk(
        LDM_UNET,
        block_out_channels=[8, 16, 24, 32],
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=4,
        sample_size=8,
    )
    vq = _shrunk(
        LDM_VQVAE,
        block_out_channels=[8, 16, 16],
        layers_per_block=1,
        num_vq_embeddings=16,
        sample_size=32,
        norm_num_groups=4,
    )
    _write_diffusers(UNet2DModel, unet, folder / "unet", files, seed)
    _write_diffusers(VQModel, vq, folder / "vqvae", files, seed + 1)
    _write_json(folder / "scheduler" / "scheduler_config.json", LDM_SCHEDULER)
    _write_json(folder / "model_index.json", LDM_MODEL_INDEX)
    return folder


# ----------------------------------------------------------------------------- Stable Diffusion 1.x


def _sd_model_index(version, feature_extractor="CLIPImageProcessor"):
    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": version,
        "feature_extractor": ["transformers", feature_extractor],
        "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def _sd1_scheduler(version):
    # SD 1.x PNDMScheduler text (key order as in the files: clip_sample last). No prediction_type: epsilon.
    return {
        "_class_name": "PNDMScheduler",
        "_diffusers_version": version,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
        "clip_sample": False,
    }


def _sd1_unet(version, name_or_path=None):
    cfg = {"_class_name": "UNet2DConditionModel", "_diffusers_version": version}
    if name_or_path is not None:
        cfg["_name_or_path"] = name_or_path
    return cfg | {
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    }


def _sd_vae(version, sample_size, name_or_path=None, norm_num_groups=True, scaling_factor=None):
    cfg = {"_class_name": "AutoencoderKL", "_diffusers_version": version}
    if name_or_path is not None:
        cfg["_name_or_path"] = name_or_path
    cfg |= {
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
    }
    if norm_num_groups:
        cfg["norm_num_groups"] = 32
    cfg |= {"out_channels": 3, "sample_size": sample_size}
    if scaling_factor is not None:
        cfg["scaling_factor"] = scaling_factor
    cfg["up_block_types"] = ["UpDecoderBlock2D"] * 4
    return cfg


def _clip_l_text_encoder(name_or_path, transformers_version, torch_dtype="float32", projection_dim=True):
    cfg = {} if name_or_path is None else {"_name_or_path": name_or_path}
    cfg |= {
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "quick_gelu",
        "hidden_size": 768,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 3072,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "pad_token_id": 1,
    }
    if projection_dim:
        cfg["projection_dim"] = 768
    return cfg | {"torch_dtype": torch_dtype, "transformers_version": transformers_version, "vocab_size": 49408}


# SD 1.4 main (github.com/wswplay/stable-diffusion-v1-4 at 133a221 = upstream main), all verbatim:
SD14_MODEL_INDEX = _sd_model_index("0.2.2")
SD14_SCHEDULER = _sd1_scheduler("0.7.0.dev0")
SD14_UNET = _sd1_unet("0.2.2")
SD14_VAE = _sd_vae("0.2.2", 512, norm_num_groups=False, scaling_factor=0.18215)  # "correct vae config" 7bc2e3c
SD14_TEXT_ENCODER = _clip_l_text_encoder("openai/clip-vit-large-patch14", "4.21.0.dev0", projection_dim=False)
SD14_TOKENIZER = _tokenizer_config("openai/clip-vit-large-patch14")
# SD 1.4 also ships a stray Jupyter checkpoint of an older scheduler config (verbatim, blob 93561f30):
SD14_SCHEDULER_IPYNB = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.2.2",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "skip_prk_steps": True,
}

# SD 1.5 main (github.com/HDRJ-One/runwayml-stable-diffusion-v1-5, branch main), all verbatim:
SD15_MODEL_INDEX = _sd_model_index("0.6.0")
SD15_SCHEDULER = _sd1_scheduler("0.6.0")
SD15_UNET = _sd1_unet("0.6.0")
SD15_VAE = _sd_vae("0.6.0", 512)  # no scaling_factor
SD15_TEXT_ENCODER = _clip_l_text_encoder("openai/clip-vit-large-patch14", "4.22.0.dev0")
SD15_TOKENIZER = _tokenizer_config("openai/clip-vit-large-patch14")

# SD 1.5 fp16 branch (same mirror, branch fp16 at ded79e2), all verbatim: older model_index (CLIPFeatureExtractor),
# _name_or_path from the conversion machine, vae sample_size 256 (main corrected it to 512 in #13),
# text encoder torch_dtype "float16".
SD15_FP16_MODEL_INDEX = {**_sd_model_index("0.6.0", "CLIPFeatureExtractor")}
SD15_FP16_SCHEDULER = _sd1_scheduler("0.6.0")
SD15_FP16_UNET = _sd1_unet("0.6.0", "/home/patrick/stable-diffusion-v1-5/unet")
SD15_FP16_VAE = _sd_vae("0.6.0", 256, name_or_path="/home/patrick/stable-diffusion-v1-5/vae")
SD15_FP16_TEXT_ENCODER = _clip_l_text_encoder(
    "/home/patrick/stable-diffusion-v1-5/text_encoder", "4.22.0.dev0", torch_dtype="float16"
)
SD15_FP16_TOKENIZER = _tokenizer_config("/home/patrick/stable-diffusion-v1-5/tokenizer")


def _sd_text_side(folder: Path, te_cfg, tok_cfg, special, te_files, seed, hidden=32, layers=2):
    """tokenizer/ and text_encoder/ for one CLIP text encoder; returns the shrunk text-encoder config."""
    vocab = _write_tokenizer(folder / "tokenizer", tok_cfg, special)
    te = _shrunk(te_cfg, **_text_encoder_sizes(hidden, layers, vocab))
    if "projection_dim" in te:
        te["projection_dim"] = hidden if te_cfg["projection_dim"] == te_cfg["hidden_size"] else hidden // 2
    _write_text_encoder("CLIPTextModel", te, folder / "text_encoder", te_files, seed + 2)
    return te


def _build_sd(folder, texts, weights_kind, variant_only, seed, unet_sizes, vae_sample, hidden=32, layers=2, extra=()):
    """One StableDiffusionPipeline folder from its verbatim texts `texts` (model_index, scheduler, unet, vae,
    text_encoder, tokenizer_config, special_tokens_map), shrunk by `unet_sizes`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    model_index, scheduler, unet_cfg, vae_cfg, te_cfg, tok_cfg, special = texts
    files = _files(weights_kind, variant_only)
    te = _sd_text_side(folder, te_cfg, tok_cfg, special, files, seed, hidden, layers)
    unet = _shrunk(unet_cfg, **SD_UNET_SIZES, cross_attention_dim=te["hidden_size"], **unet_sizes)
    vae = _shrunk(vae_cfg, **SD_VAE_SIZES, sample_size=vae_sample)
    _write_diffusers(UNet2DConditionModel, unet, folder / "unet", files, seed)
    _write_diffusers(AutoencoderKL, vae, folder / "vae", files, seed + 1)
    _write_json(folder / "scheduler" / "scheduler_config.json", scheduler)
    if model_index["feature_extractor"][0] is not None:
        _write_json(folder / "feature_extractor" / "preprocessor_config.json", PREPROCESSOR_CONFIG)
    for path, cfg in extra:
        _write_json(folder / path, cfg)
    _write_json(folder / "model_index.json", model_index)
    return folder


def build_sd14(folder: Path, variant_only: bool = False, seed: int = 0) -> Path:
    """CompVis/stable-diffusion-v1-4 main: StableDiffusionPipeline naming safety_checker and feature_extractor,
    PNDMScheduler, CLIPTextModel (config without projection_dim), vae config WITH scaling_factor 0.18215 and
    without norm_num_groups. Weights: .bin, .safetensors, .fp16.bin and .fp16.safetensors per component (no
    safety_checker weights). Also scheduler/.ipynb_checkpoints/scheduler_config-checkpoint.json, as on the Hub.

    Shrunk: unet block_out_channels [320, 640, 1280, 1280] -> [8, 16, 16, 16], layers_per_block 2 -> 1,
    norm_num_groups 32 -> 4, attention_head_dim 8 -> 2, cross_attention_dim 768 -> 32, sample_size 64 -> 8;
    vae block_out_channels [128, 256, 512, 512] -> [8, 16, 16, 16], layers_per_block 2 -> 1, sample_size 512 -> 64,
    "norm_num_groups": 4 APPENDED (the real text has none); text encoder hidden_size 768 -> 32, intermediate_size
    3072 -> 128, num_attention_heads 12 -> 2, num_hidden_layers 12 -> 2, max_position_embeddings 77 -> 16,
    vocab_size 49408 -> the tokenizer's; tokenizer model_max_length 77 -> 16."""
    texts = (SD14_MODEL_INDEX, SD14_SCHEDULER, SD14_UNET, SD14_VAE, SD14_TEXT_ENCODER, SD14_TOKENIZER)
    return _build_sd(
        folder,
        (*texts, CLIP_L_SPECIAL_TOKENS_MAP),
        "both",
        variant_only,
        seed,
        {"attention_head_dim": 2, "sample_size": 8},
        64,
        extra=[("scheduler/.ipynb_checkpoints/scheduler_config-checkpoint.json", SD14_SCHEDULER_IPYNB)],
    )


def build_sd15(folder: Path, variant_only: bool = False, seed: int = 0) -> Path:
    """runwayml/stable-diffusion-v1-5 main: as SD 1.4 but model_index 0.6.0, a text encoder config with
    projection_dim 768 (shrunk to 32 with hidden_size) and a vae config WITHOUT scaling_factor (class default
    0.18215). Weights: .bin, .safetensors, .fp16.bin and .fp16.safetensors (fp32 / fp16) per component.

    Shrunk: as `build_sd14` (unet, text encoder, tokenizer), vae block_out_channels -> [8, 16, 16, 16],
    layers_per_block 1, norm_num_groups 32 -> 4, sample_size 512 -> 64."""
    texts = (SD15_MODEL_INDEX, SD15_SCHEDULER, SD15_UNET, SD15_VAE, SD15_TEXT_ENCODER, SD15_TOKENIZER)
    return _build_sd(
        folder,
        (*texts, CLIP_L_SPECIAL_TOKENS_MAP),
        "both",
        variant_only,
        seed,
        {"attention_head_dim": 2, "sample_size": 8},
        64,
    )


def build_sd15_fp16(folder: Path, variant_only: bool = False, seed: int = 0) -> Path:
    """runwayml/stable-diffusion-v1-5, revision fp16: the same components with their weights STORED IN fp16
    under the plain names (unet/diffusion_pytorch_model.bin, text_encoder/pytorch_model.bin,
    vae/diffusion_pytorch_model.bin; no safetensors on that branch), text encoder config "torch_dtype": "float16",
    vae config sample_size 256 (the branch predates main's correction to 512), feature_extractor
    CLIPFeatureExtractor in model_index.json, `_name_or_path` fields of the conversion machine.

    Shrunk: as `build_sd15`, the vae sample_size 256 -> 32 (the same /8 as every sample size)."""
    texts = (
        SD15_FP16_MODEL_INDEX,
        SD15_FP16_SCHEDULER,
        SD15_FP16_UNET,
        SD15_FP16_VAE,
        SD15_FP16_TEXT_ENCODER,
        SD15_FP16_TOKENIZER,
    )
    return _build_sd(
        folder,
        (*texts, CLIP_L_SPECIAL_TOKENS_MAP),
        "fp16bin",
        variant_only,
        seed,
        {"attention_head_dim": 2, "sample_size": 8},
        32,
    )


# ----------------------------------------------------------------------------- Stable Diffusion 2.1 (768 and base)


def _openclip_h_text_encoder(name_or_path):
    # OpenCLIP ViT-H/14 as CLIPTextModel: gelu, hidden 1024, 23 layers (the last of 24 dropped), projection 512.
    return {
        "_name_or_path": name_or_path,
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "gelu",
        "hidden_size": 1024,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 4096,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 23,
        "pad_token_id": 1,
        "projection_dim": 512,
        "torch_dtype": "float32",
        "transformers_version": "4.25.0.dev0",
        "vocab_size": 49408,
    }


def _sd2_unet(sample_size, upcast_attention):
    cfg = {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.10.0.dev0",
        "act_fn": "silu",
        "attention_head_dim": [5, 10, 20, 20],
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 1024,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "dual_cross_attention": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "num_class_embeds": None,
        "only_cross_attention": False,
        "out_channels": 4,
        "sample_size": sample_size,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "use_linear_projection": True,
    }
    if upcast_attention:
        cfg["upcast_attention"] = True
    return cfg


# SD 2.1 (github.com/jack-op11/stable-diffusion-2-1, snapshot of Feb 2023), all verbatim. model_index.json keeps
# "requires_safety_checker" last and safety_checker [null, null]; no image_encoder entry (the 2023 snapshot has
# none).
SD21_MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.8.0",
    "feature_extractor": ["transformers", "CLIPFeatureExtractor"],
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "requires_safety_checker": False,
}
SD21_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.8.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
SD21_UNET = _sd2_unet(96, upcast_attention=True)  # key order: use_linear_projection, then upcast_attention
SD21_VAE = _sd_vae("0.8.0", 768, name_or_path="hf-models/stable-diffusion-v2-768x768/vae")
SD21_TEXT_ENCODER = _openclip_h_text_encoder("hf-models/stable-diffusion-v2-768x768/text_encoder")
SD21_TOKENIZER = _tokenizer_config("hf-models/stable-diffusion-v2-768x768/tokenizer")

# SD 2.1-base (github.com/jack-op11/stable-diffusion-2-1-base, main at 88bb1a4 "Update model_index.json",
# Dec 20 2022), all verbatim. Its vae config says sample_size 768 although the model is 512.
SD21B_MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.10.0.dev0",
    "feature_extractor": ["transformers", "CLIPFeatureExtractor"],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
SD21B_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.10.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
SD21B_UNET = _sd2_unet(64, upcast_attention=False)
SD21B_VAE = _sd_vae("0.10.0.dev0", 768)
SD21B_TEXT_ENCODER = _openclip_h_text_encoder("stabilityai/stable-diffusion-2")
SD21B_TOKENIZER = _tokenizer_config("stabilityai/stable-diffusion-2")


def build_sd21(folder: Path, variant_only: bool = False, seed: int = 0) -> Path:
    """stabilityai/stable-diffusion-2-1: v_prediction DDIMScheduler, 768 px (unet sample_size 96), OpenCLIP-H as
    CLIPTextModel (gelu, hidden_size 1024), upcast_attention, use_linear_projection, model_index.json with
    safety_checker [null, null] and requires_safety_checker false, tokenizer pad "!" in special_tokens_map.json
    but "<|endoftext|>" in tokenizer_config.json (both as on the Hub). Weights: .bin and .safetensors (fp32).

    Shrunk: unet block_out_channels [320, 640, 1280, 1280] -> [8, 16, 16, 16], layers_per_block 2 -> 1,
    norm_num_groups 32 -> 4, attention_head_dim [5, 10, 20, 20] -> [1, 2, 2, 2], cross_attention_dim 1024 -> 32,
    sample_size 96 -> 12 (pixel side 96); vae block_out_channels [128, 256, 512, 512] -> [8, 16, 16, 16],
    layers_per_block 2 -> 1, norm_num_groups 32 -> 4, sample_size 768 -> 96; text encoder hidden_size 1024 -> 32,
    intermediate_size 4096 -> 128, num_attention_heads 16 -> 2, num_hidden_layers 23 -> 3, projection_dim
    512 -> 16 (half the width, as on the Hub), max_position_embeddings 77 -> 16, vocab_size 49408 -> the
    tokenizer's; tokenizer model_max_length 77 -> 16."""
    texts = (SD21_MODEL_INDEX, SD21_SCHEDULER, SD21_UNET, SD21_VAE, SD21_TEXT_ENCODER, SD21_TOKENIZER)
    return _build_sd(
        folder,
        (*texts, OPENCLIP_SPECIAL_TOKENS_MAP),
        "bin+safetensors",
        variant_only,
        seed,
        {"attention_head_dim": [1, 2, 2, 2], "sample_size": 12},
        96,
        layers=3,
    )


def build_sd21_base(folder: Path, variant_only: bool = False, seed: int = 0) -> Path:
    """stabilityai/stable-diffusion-2-1-base: epsilon PNDMScheduler, 512 px (unet sample_size 64), the same
    OpenCLIP-H text encoder, no upcast_attention, safety_checker [null, null]; its vae config says sample_size
    768 (sic). Weights: .bin and .safetensors (fp32).

    Shrunk: as `build_sd21`, except unet sample_size 64 -> 8 (pixel side 64); the vae sample_size 768 -> 96
    (the same /8, keeping the Hub's mismatch)."""
    texts = (SD21B_MODEL_INDEX, SD21B_SCHEDULER, SD21B_UNET, SD21B_VAE, SD21B_TEXT_ENCODER, SD21B_TOKENIZER)
    return _build_sd(
        folder,
        (*texts, OPENCLIP_SPECIAL_TOKENS_MAP),
        "bin+safetensors",
        variant_only,
        seed,
        {"attention_head_dim": [1, 2, 2, 2], "sample_size": 8},
        96,
        layers=3,
    )


# ----------------------------------------------------------------------------- SDXL base 1.0

# github.com/andrewcchoi/stabilityai-stable-diffusion-xl-base-1.0 at bf71498 (Patrick von Platen, Aug 4 2023),
# all verbatim. model_index.json has no feature_extractor/image_encoder entries; "add_watermarker": null.
SDXL_MODEL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "_diffusers_version": "0.19.0.dev0",
    "force_zeros_for_empty_prompt": True,
    "add_watermarker": None,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}
SDXL_UNET = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.19.0.dev0",
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 2048,
    "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "sample_size": 128,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": None,
    "use_linear_projection": True,
}
SDXL_VAE = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.20.0.dev0",
    "_name_or_path": "../sdxl-vae/",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
# Both text encoder configs say torch_dtype "float16" although model.safetensors holds fp32 tensors
# (492265168 bytes for text_encoder, twice model.fp16.safetensors' 246144152).
SDXL_TEXT_ENCODER = _clip_l_text_encoder(None, "4.32.0.dev0", torch_dtype="float16")
SDXL_TEXT_ENCODER_2 = {
    "architectures": ["CLIPTextModelWithProjection"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 5120,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "pad_token_id": 1,
    "projection_dim": 1280,
    "torch_dtype": "float16",
    "transformers_version": "4.32.0.dev0",
    "vocab_size": 49408,
}
SDXL_TOKENIZER = _tokenizer_config(clean_up=True, special_map_file=False)
SDXL_TOKENIZER_2 = _tokenizer_config(pad="!", clean_up=True, special_map_file=False)


def build_sdxl_base(folder: Path, variant_only: bool = False, seed: int = 0) -> Path:
    """stabilityai/stable-diffusion-xl-base-1.0: StableDiffusionXLPipeline with text_encoder (CLIPTextModel),
    text_encoder_2 (CLIPTextModelWithProjection), tokenizer, tokenizer_2 (pad "!"), unet (addition_embed_type
    text_time, addition_time_embed_dim 256, projection_class_embeddings_input_dim 2816 = 6 x 256 + 1280), vae
    (scaling_factor 0.13025, force_upcast true), EulerDiscreteScheduler, force_zeros_for_empty_prompt true.
    Weights: fp32 *.safetensors next to *.fp16.safetensors in every component (no .bin), as on the Hub.

    Shrunk: unet block_out_channels [320, 640, 1280] -> [8, 16, 32], layers_per_block 2 -> 1, norm_num_groups
    32 -> 4, attention_head_dim [5, 10, 20] -> [1, 2, 4], transformer_layers_per_block [1, 2, 10] -> [1, 1, 2],
    cross_attention_dim 2048 -> 48 (= 16 + 32, the two text encoders' hidden sizes, as 768 + 1280),
    sample_size 128 -> 16 (pixel side 128); KEPT addition_time_embed_dim 256 and
    projection_class_embeddings_input_dim 2816, hence text_encoder_2's projection_dim 1280 is kept too;
    vae block_out_channels -> [8, 16, 16, 16], layers_per_block 1, norm_num_groups 4, sample_size 1024 -> 128;
    text_encoder hidden_size 768 -> 16, projection_dim 768 -> 16; text_encoder_2 hidden_size 1280 -> 32 (its
    projection 32 -> 1280); both: intermediate_size 4 x hidden, 2 heads, 2 layers, max_position_embeddings
    77 -> 16, vocab_size 49408 -> the tokenizers'; tokenizers model_max_length 77 -> 16."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    files = _files("safetensors+fp16", variant_only)
    v1 = _write_tokenizer(folder / "tokenizer", SDXL_TOKENIZER, CLIP_L_SPECIAL_TOKENS_MAP)
    v2 = _write_tokenizer(folder / "tokenizer_2", SDXL_TOKENIZER_2, OPENCLIP_SPECIAL_TOKENS_MAP)
    te1 = _shrunk(SDXL_TEXT_ENCODER, **_text_encoder_sizes(16, 2, v1), projection_dim=16)
    te2 = _shrunk(SDXL_TEXT_ENCODER_2, **_text_encoder_sizes(32, 2, v2))
    _write_text_encoder("CLIPTextModel", te1, folder / "text_encoder", files, seed + 2)
    _write_text_encoder("CLIPTextModelWithProjection", te2, folder / "text_encoder_2", files, seed + 3)
    unet = _shrunk(
        SDXL_UNET,
        block_out_channels=[8, 16, 32],
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=[1, 2, 4],
        transformer_layers_per_block=[1, 1, 2],
        cross_attention_dim=te1["hidden_size"] + te2["hidden_size"],
        sample_size=16,
    )
    assert unet["projection_class_embeddings_input_dim"] == 6 * unet["addition_time_embed_dim"] + te2["projection_dim"]
    vae = _shrunk(SDXL_VAE, **SD_VAE_SIZES, sample_size=128)
    _write_diffusers(UNet2DConditionModel, unet, folder / "unet", files, seed)
    _write_diffusers(AutoencoderKL, vae, folder / "vae", files, seed + 1)
    _write_json(folder / "scheduler" / "scheduler_config.json", SDXL_SCHEDULER)
    _write_json(folder / "model_index.json", SDXL_MODEL_INDEX)
    return folder


# ----------------------------------------------------------------------------- the entry point

BUILDERS = {
    "google/ddpm-cifar10-32": build_ddpm_cifar10_32,
    "CompVis/ldm-celebahq-256": build_ldm_celebahq_256,
    "CompVis/stable-diffusion-v1-4": build_sd14,
    "runwayml/stable-diffusion-v1-5": build_sd15,
    "runwayml/stable-diffusion-v1-5@fp16": build_sd15_fp16,
    "stabilityai/stable-diffusion-2-1": build_sd21,
    "stabilityai/stable-diffusion-2-1-base": build_sd21_base,
    "stabilityai/stable-diffusion-xl-base-1.0": build_sdxl_base,
}


def build_hub_folder(repo: str, root: Path, variant_only: bool = False, seed: int = 0) -> Path:
    """Writes root/<repo with / and @ replaced by __> and returns the folder path.

    variant_only=True writes only `*.fp16.safetensors` weight files (diffusion_pytorch_model.fp16.safetensors,
    model.fp16.safetensors), as the layouts' fp16-variant branches do; load them with variant="fp16"."""
    if repo not in BUILDERS:
        raise KeyError(f"no Hub layout for {repo!r}; known: {', '.join(HUB_LAYOUTS)}")
    folder = _folder(repo, root)
    folder.mkdir(parents=True, exist_ok=True)
    return BUILDERS[repo](folder, variant_only=variant_only, seed=seed)
