"""`python -m lab.fit`: train a diffusion target on a membership split (LightningCLI).

    python -m lab.fit --config configs/ddpm_mnist.yaml --trainer.max_epochs 50

The data module's image size and channels are linked into the model, so they are set once.
Bad input ends with a one-line `lab.fit: error: ...` and exit status 2.
"""

from __future__ import annotations

import sys
import warnings

from lightning.pytorch.cli import LightningCLI

from lab.data import MembershipDataModule
from lab.errors import exit_on_lab_error
from lab.targets import PixelDDPM


SUBCOMMANDS = ("fit", "validate", "test", "predict")


class FitCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.image_size", "model.init_args.image_size")
        parser.link_arguments("data.channels", "model.init_args.channels")


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
