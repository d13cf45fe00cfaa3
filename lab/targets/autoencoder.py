"""The first stage of a latent-diffusion target: a diffusers `AutoencoderKL` or `VQModel`.

Latent diffusion (Rombach et al. 2022) trains its denoiser on z = s * E(x), the encoder's output
scaled by s so that z has about unit variance, and decodes samples with D(z / s). Here:

    AutoencoderKL:  E(x) = mean of the posterior q(z | x)   (deterministic, as attacks need)
                    training loss  ||D(z) - x||^2 + kl_weight * KL(q(z | x) || N(0, I)),  z ~ q(z | x)
    VQModel:        E(x) = the encoder's pre-quantisation output (decode quantises it)
                    training loss  ||D(Q(E(x))) - x||^2 + commitment/codebook loss

The autoencoder is trained (with Lightning) on the members only, or loaded from a diffusers
folder (`pretrained`). After training, s = 1 / std(members' latents) is written into its config
(`scaling_factor`), where `LDMPipeline` reads it. Reconstruction error is logged for members and
for validation non-members: a gap between the two is itself a membership signal.
"""

from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, VQModel
from torch.utils.data import DataLoader

from lab.errors import LabError

KINDS = {"kl": AutoencoderKL, "vq": VQModel}
STAGE_META = "autoencoder.json"


@dataclass
class AutoencoderStage:
    """The autoencoder of a latent target: load one (`pretrained`) or train one on the members.

    Args:
        kind: 'kl' (AutoencoderKL) or 'vq' (VQModel).
        pretrained: a diffusers autoencoder folder (config.json + weights) or a pipeline folder
            holding one (`vqvae/` or `vae/`); nothing is trained then.
        block_out_channels: encoder/decoder widths, one per level (each level past the first halves the size).
        layers_per_block, norm_num_groups: as in diffusers.
        latent_channels: channels of the latent the UNet sees.
        num_vq_embeddings: codebook size ('vq').
        kl_weight: weight of the KL term ('kl').
        epochs, batch_size, lr: training of the autoencoder (AdamW).
        log_every_n_epochs: how often to log a reconstruction grid.
    """

    kind: str = "kl"
    pretrained: str | None = None
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    latent_channels: int = 4
    num_vq_embeddings: int = 256
    kl_weight: float = 1e-6
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    log_every_n_epochs: int = 10

    def build(self, channels: int, image_size: int) -> AutoencoderKL | VQModel:
        """A randomly initialised autoencoder, or the pretrained one."""
        if self.pretrained:
            return load_autoencoder(self.pretrained)
        if self.kind not in KINDS:
            raise LabError(f"autoencoder kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise LabError(
                f"autoencoder norm_num_groups {self.norm_num_groups} "
                f"must divide every width in {self.block_out_channels}"
            )
        levels = len(self.block_out_channels)
        if image_size % 2 ** (levels - 1):
            raise LabError(
                f"image_size {image_size} must be divisible by 2^{levels - 1} for {levels} autoencoder levels"
            )
        common = dict(
            in_channels=channels,
            out_channels=channels,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=tuple(self.block_out_channels),
            layers_per_block=self.layers_per_block,
            latent_channels=self.latent_channels,
            norm_num_groups=self.norm_num_groups,
            sample_size=image_size,
        )
        if self.kind == "vq":
            return VQModel(**common, num_vq_embeddings=self.num_vq_embeddings)
        return AutoencoderKL(**common)


def downsampling(autoencoder) -> int:
    """How many pixels of the image one latent cell covers along a side."""
    return 2 ** (len(autoencoder.config.block_out_channels) - 1)


def latent_channels(autoencoder) -> int:
    return int(autoencoder.config.latent_channels)


@contextmanager
def upcast(autoencoder, x: torch.Tensor):
    """Where the config says `force_upcast` (SDXL's VAE overflows in fp16; AutoencoderKL's default is true),
    run it in float32: fp16 weights are cast up for the call and back after it (as SDXL's pipeline does)
    and fp16 autocast is off; yields x in the VAE's dtype."""
    if not autoencoder.config.get("force_upcast", False):
        yield x
        return
    half_weights = next(autoencoder.parameters()).dtype == torch.float16
    if half_weights:
        autoencoder.to(torch.float32)
    half = torch.is_autocast_enabled(x.device.type) and torch.get_autocast_dtype(x.device.type) == torch.float16
    try:
        with torch.autocast(x.device.type, enabled=False) if half else nullcontext():
            yield x.to(next(autoencoder.parameters()).dtype)
    finally:
        if half_weights:
            autoencoder.to(torch.float16)


def encode(autoencoder, x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> the latents the UNet models: s * (posterior mean | pre-quantisation code)."""
    with upcast(autoencoder, x) as x_in:
        out = autoencoder.encode(x_in)
        z = out.latent_dist.mean if isinstance(autoencoder, AutoencoderKL) else out.latents
        return (z * autoencoder.config.scaling_factor).to(x.dtype)


def decode(autoencoder, z: torch.Tensor) -> torch.Tensor:
    """Latents -> images (as `LDMPipeline` decodes them)."""
    with upcast(autoencoder, z) as z_in:
        return autoencoder.decode(z_in / autoencoder.config.scaling_factor).sample.to(z.dtype)


def load_autoencoder(path: str | Path) -> AutoencoderKL | VQModel:
    """A diffusers autoencoder folder, or the `vqvae/` / `vae/` of a pipeline folder."""
    path = Path(path)
    for folder in (path, path / "vqvae", path / "vae"):
        config = folder / "config.json"
        if config.is_file():
            kind = json.loads(config.read_text()).get("_class_name")
            cls = {c.__name__: c for c in KINDS.values()}.get(kind)
            if cls is None:
                raise LabError(
                    f"{folder} holds a {kind}, not an autoencoder the lab supports (AutoencoderKL, VQModel)"
                )
            try:
                from lab.targets.weights import complete_weights

                with complete_weights(folder):
                    model = cls.from_pretrained(folder, low_cpu_mem_usage=False, local_files_only=True)
            except (OSError, ValueError) as e:
                raise LabError(f"cannot load the autoencoder in {folder}: {e}") from None
            from lab.targets.families.latent import stated_scaling_factor

            if folder.name == "vqvae" and not stated_scaling_factor(folder):
                model.register_to_config(scaling_factor=1.0)  # an LDM's unscaled latents (lab.targets.families.latent)
            return model.to(torch.float32)
    raise LabError(f"no diffusers autoencoder in {path} (looked for config.json in it, vqvae/ and vae/)")


class AutoencoderTraining(pl.LightningModule):
    """Lightning module for the autoencoder stage: reconstruction (+ KL or VQ) loss on members."""

    def __init__(self, autoencoder: AutoencoderKL | VQModel, stage: AutoencoderStage):
        super().__init__()
        self.autoencoder, self.stage = autoencoder, stage

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, regulariser) as in training: KL samples the posterior, VQ quantises."""
        if isinstance(self.autoencoder, AutoencoderKL):
            posterior = self.autoencoder.encode(x).latent_dist
            recon = self.autoencoder.decode(posterior.sample()).sample
            return recon, self.stage.kl_weight * posterior.kl().mean()
        out = self.autoencoder(x)
        return out.sample, out.commit_loss.mean()

    def training_step(self, batch, batch_idx):
        x, _ = batch
        recon, reg = self.reconstruct(x)
        mse = F.mse_loss(recon, x)
        self.log("autoencoder/train_recon_mse", mse, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return mse + reg

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        x, _ = batch
        mse = F.mse_loss(decode(self.autoencoder, encode(self.autoencoder, x)).clamp(-1, 1), x)
        name = ("members", "nonmembers")[dataloader_idx]
        self.log(f"autoencoder/recon_mse_{name}", mse, batch_size=x.shape[0], add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        epoch = self.current_epoch + 1
        writer = getattr(self.logger, "experiment", None)
        every = self.stage.log_every_n_epochs
        if not hasattr(writer, "add_images") or every <= 0 or (epoch % every and epoch != self.trainer.max_epochs):
            return
        x = next(iter(self.trainer.val_dataloaders[0]))[0][:8].to(self.device)
        recon = decode(self.autoencoder, encode(self.autoencoder, x)).clamp(-1, 1)
        writer.add_images(
            "autoencoder/originals_over_reconstructions", (torch.cat([x, recon]) + 1) / 2, global_step=epoch
        )

    def configure_optimizers(self):
        return torch.optim.AdamW(self.autoencoder.parameters(), lr=self.stage.lr)


@torch.inference_mode()
def latent_std(autoencoder, loader: DataLoader) -> float:
    z = torch.cat([encode(autoencoder, x) for x, _ in loader])
    return float(z.std())


def train_autoencoder(autoencoder, stage: AutoencoderStage, datamodule, out: Path, accelerator: str, logger) -> dict:
    """Fit the autoencoder on the members (its own Lightning run), set its latent scale, save it.

    Returns the stage's record: reconstruction MSE on members and validation non-members, and the scale.
    """
    members = DataLoader(datamodule.dataset(role="member"), batch_size=stage.batch_size, shuffle=True)
    val = [
        DataLoader(datamodule.dataset(role="member"), batch_size=stage.batch_size),
        DataLoader(datamodule.dataset(role="nonmember", eval_split="validation"), batch_size=stage.batch_size),
    ]
    module = AutoencoderTraining(autoencoder, stage)
    trainer = pl.Trainer(
        max_epochs=stage.epochs,
        accelerator=accelerator,
        devices=1,
        logger=logger,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        check_val_every_n_epoch=max(1, stage.log_every_n_epochs),
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    trainer.fit(module, members, val)
    autoencoder.eval().cpu()
    autoencoder.register_to_config(scaling_factor=1.0)
    autoencoder.register_to_config(scaling_factor=1.0 / latent_std(autoencoder, val[0]))
    result = {k: v for per_loader in trainer.validate(module, val, verbose=False) for k, v in per_loader.items()}
    record = {
        "split_hash": datamodule.split.content_hash,
        "kind": stage.kind,
        "epochs": stage.epochs,
        "scaling_factor": autoencoder.config.scaling_factor,
        **{k.removeprefix("autoencoder/"): float(v) for k, v in result.items()},
    }
    autoencoder.eval().cpu()
    autoencoder.save_pretrained(out)
    (out / STAGE_META).write_text(json.dumps(record, indent=1))
    return record
