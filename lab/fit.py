"""`python -m lab.fit`: train a diffusion target on a membership split (LightningCLI).

    python -m lab.fit --config configs/ddpm_mnist.yaml --trainer.max_epochs 50

The data module's image size and channels are linked into the model, so they are set once.
Bad input ends with a one-line `lab.fit: error: ...` and exit status 2.
"""

from __future__ import annotations

import pickle
import sys
import warnings
from pathlib import Path

import torch

from lightning.pytorch.cli import LightningCLI

from lab.data import MembershipDataModule
from lab.errors import LabError, exit_on_lab_error
from lab.targets import PixelDDPM


SUBCOMMANDS = ("fit", "validate", "test", "predict")


class FitCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.image_size", "model.init_args.image_size")
        parser.link_arguments("data.channels", "model.init_args.channels")

    def _parse_ckpt_path(self) -> None:
        """Lightning reads the checkpoint's hyper-parameters here (weights_only): a bad file is a clear error first."""
        ckpt = self.config.get(self.config.get("subcommand") or "fit", {}).get("ckpt_path")
        if ckpt and Path(ckpt).is_file():
            read_checkpoint(ckpt)
        super()._parse_ckpt_path()

    def before_fit(self) -> None:
        """Check the checkpoint to resume from against the model before Lightning loads it."""
        ckpt = self.config.fit.get("ckpt_path")
        if ckpt == "last":
            found = [Path(cb.dirpath) / "last.ckpt" for cb in self.trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
            ckpt = next((str(p) for p in found if p.is_file()), None)
        if ckpt and ckpt not in ("best", "hpc", "registry"):
            check_architecture(read_checkpoint(ckpt), self.model, ckpt)


def read_checkpoint(path: str) -> dict:
    """The checkpoint's contents if it holds only tensors and plain data (weights_only), else a LabError.

    A pickle that would run code is refused, never executed; a truncated file is named as such."""
    if not Path(path).is_file():
        raise LabError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = next((line.strip() for line in str(e).splitlines() if "Unsupported global" in line), "not plain data")
        raise LabError(f"refused to load {path}: it holds more than tensors and plain data ({reason})") from None
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, EOFError, ... for damaged files
        raise LabError(f"{path} is not a readable checkpoint (truncated or corrupt?): {type(e).__name__}: {e}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise LabError(f"{path} is no Lightning checkpoint (no state_dict)")
    return checkpoint


def check_architecture(checkpoint: dict, model: torch.nn.Module, path: str) -> None:
    """A LabError unless the checkpoint's tensors are exactly this model's (names and shapes)."""
    state, expected = checkpoint["state_dict"], model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        example = (missing or unexpected or wrong)[0]
        raise LabError(
            f"{path} was saved from another architecture ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} mis-shaped tensors, e.g. {example}): check the model config"
        )


def main(args: list[str] | None = None) -> FitCLI:
    given = sys.argv[1:] if args is None else list(args)
    if not given or given[0] not in SUBCOMMANDS:  # `python -m lab.fit --config ...` means `fit`
        if args is None:
            sys.argv[1:1] = ["fit"]
        else:
            args = ["fit", *given]
    # A latent target keeps its frozen autoencoder in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    with exit_on_lab_error("lab.fit"):
        return FitCLI(
            PixelDDPM,
            MembershipDataModule,
            subclass_mode_model=True,
            save_config_kwargs={"overwrite": True},
            args=args,
        )



if __name__ == "__main__":
    main()
