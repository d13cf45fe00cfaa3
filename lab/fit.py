"""`python -m lab.fit`: train a diffusion target on a membership split (LightningCLI).

    python -m lab.fit --config configs/ddpm_mnist.yaml --trainer.max_epochs 50

The data module's image size and channels are linked into the model, so they are set once.
Bad input ends with a one-line `lab.fit: error: ...` and exit status 2.
"""

from __future__ import annotations

import json
import pickle
import sys
import warnings
from pathlib import Path

import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lab.console import quiet_lightning
from lab.data import MembershipDataModule
from lab.errors import Interrupted, LabError, ShortErrors, exit_on_lab_error
from lab.locks import folder_lock
from lab.targets import PixelDDPM

CHECKPOINT_DIR = "lightning"  # <run>/lightning/last.ckpt


SUBCOMMANDS = ("fit", "validate", "test", "predict")


class FitParser(ShortErrors, LightningArgumentParser):
    short_prog = "lab.fit"


class FitCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.image_size", "model.init_args.image_size")
        parser.link_arguments("data.channels", "model.init_args.channels")

    def before_instantiate_classes(self) -> None:
        """Everything a run writes follows its run folder (`trainer.default_root_dir`): TensorBoard
        logs go to `<run>/tensorboard/`, and `<run>/lightning/last.ckpt` is written every epoch
        (a ModelCheckpoint is added when the config has none), whatever paths the config names."""
        config = self.config.get(self.config.get("subcommand") or "fit", self.config)
        trainer = config["trainer"]
        for key in ("max_epochs", "max_steps"):
            if trainer.get(key) is not None and trainer[key] < 0 and not (key == "max_steps" and trainer[key] == -1):
                raise LabError(f"trainer.{key} must be >= 0, got {trainer[key]}")
        root = trainer.get("default_root_dir") or "."
        callbacks = trainer.get("callbacks") or []
        live = any(getattr(c, "class_path", "").endswith("MembershipAUC") for c in callbacks)
        logger = trainer.get("logger")
        if live and logger in (None, True):  # Lightning's default logger, made explicit to register the MIA metrics
            logger = trainer["logger"] = Namespace(
                class_path="lightning.pytorch.loggers.TensorBoardLogger",
                init_args=Namespace(save_dir=root, name="lightning_logs"),
            )
        for spec in logger if isinstance(logger, list) else [logger]:
            if getattr(spec, "class_path", "").endswith("TensorBoardLogger"):
                spec.init_args.save_dir = root
                spec.init_args.name = spec.init_args.get("name") or "tensorboard"
                if live:  # HParams lists the live MIA metrics (MembershipAUC.on_fit_start) instead of hp_metric = -1
                    spec.init_args.default_hp_metric = False
        if not sys.stdout.isatty() and trainer.get("enable_progress_bar") is not False:
            # not a terminal (a log file, CI, SLURM): a line every few epochs instead of a bar redrawn per step
            trainer["enable_progress_bar"] = False
            callbacks = [
                *callbacks,
                Namespace(class_path="lab.callbacks.ProgressLines", init_args=Namespace(lines=20)),
            ]
            trainer["callbacks"] = callbacks
        checkpoints = [c for c in callbacks if getattr(c, "class_path", "").endswith("ModelCheckpoint")]
        for spec in checkpoints:
            spec.init_args.dirpath = str(Path(root) / CHECKPOINT_DIR)
        if not checkpoints and trainer.get("enable_checkpointing") is not False:
            trainer["callbacks"] = [
                *callbacks,
                Namespace(
                    class_path="lightning.pytorch.callbacks.ModelCheckpoint",
                    init_args=Namespace(
                        dirpath=str(Path(root) / CHECKPOINT_DIR),
                        filename="last",
                        save_top_k=1,
                        enable_version_counter=False,
                    ),
                ),
            ]

    def _run_subcommand(self, subcommand: str) -> None:
        """One writer per run folder; SIGTERM (a preempted job) is an error that says how to resume."""
        root = Path(self.trainer.default_root_dir)
        with folder_lock(root, "lab.fit"):
            try:
                super()._run_subcommand(subcommand)
            except SIGTERMException:
                epoch = self.trainer.current_epoch
                last = root / CHECKPOINT_DIR / "last.ckpt"
                resume = (
                    f"{last} holds the last complete epoch: rerun the same command to resume "
                    "(lab.fit: with --ckpt_path last)"
                    if last.is_file()
                    else "no epoch had finished"
                )
                raise Interrupted(f"stopped by SIGTERM during epoch {epoch + 1}; {resume}") from None

    def _parse_ckpt_path(self) -> None:
        """Lightning reads the checkpoint's hyper-parameters here (weights_only): a bad file is a clear error first."""
        config = self.config.get(self.config.get("subcommand") or "fit", {})
        ckpt = config.get("ckpt_path")
        if ckpt and Path(ckpt).is_file():
            check_hyperparameters(read_checkpoint(ckpt), config.get("model"), ckpt)
        super()._parse_ckpt_path()

    def before_fit(self) -> None:
        """Check the checkpoint to resume from against the model before Lightning loads it."""
        ckpt = self.config.fit.get("ckpt_path")
        if ckpt == "last":
            found = [
                Path(cb.dirpath) / "last.ckpt"
                for cb in self.trainer.checkpoint_callbacks
                if getattr(cb, "dirpath", None)
            ]
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
        raise LabError(
            f"{path} is not a readable checkpoint (truncated or corrupt?): {type(e).__name__}: {e}"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise LabError(f"{path} is no Lightning checkpoint (no state_dict)")
    return checkpoint


def _plain(value):
    """A config value as plain JSON data (tuples as lists, namespaces as dicts), for comparing."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def check_hyperparameters(checkpoint: dict, model, path: str) -> None:
    """A LabError where the config's model settings differ from the checkpoint's.

    LightningCLI replaces the config's model settings with the checkpoint's when resuming, so a
    run asked to train `block_out_channels: [16, 32]` from an `[8, 16]` checkpoint would silently
    train and export the checkpoint's: refuse instead, naming the settings that differ."""
    saved = checkpoint.get("hyper_parameters") or {}
    given = getattr(model, "init_args", None)
    if not saved or given is None:
        return
    given = _plain(given)
    differ = sorted(k for k in set(saved) & set(given) if not k.startswith("_") and _plain(saved[k]) != given[k])
    if differ:
        detail = "; ".join(f"{k}: checkpoint {_plain(saved[k])!r}, config {given[k]!r}" for k in differ[:3])
        raise LabError(
            f"{path} was trained with other model settings than the config's ({detail}): make them match to resume"
        )


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


def fit_references(
    split: str | Path, config: str | Path, k: int, out: str | Path, seed: int = 0, overrides: list[str] = ()
) -> list[Path]:
    """Fit K LiRA reference targets (`out/ref_NN/`) with this CLI and the target's fit config, on
    `lab.attacks.lira.reference_splits` of the target's split: each of the target's member count."""
    from lab.attacks.lira import reference_splits
    from lab.data.split import MembershipSplit

    if k < 2:
        raise LabError(f"lira needs at least 2 references, got {k}")
    runs = []
    for j, ref in enumerate(reference_splits(MembershipSplit.load(split), k, seed)):
        run = Path(out) / f"ref_{j:02d}"
        run.mkdir(parents=True, exist_ok=True)
        ref.save(run / "reference_split.json")
        main(
            [
                "--config",
                str(config),
                "--trainer.default_root_dir",
                str(run),
                "--seed_everything",
                str(seed + j + 1),
                "--data.split_file",
                str(run / "reference_split.json"),
                *overrides,
            ]
        )
        runs.append(run)
    return runs


def main(args: list[str] | None = None) -> FitCLI:
    from lab.paths import resolve_config_args

    if args is None:
        sys.argv[1:] = resolve_config_args(sys.argv[1:])  # `configs/...` from the package outside a checkout
    else:
        args = resolve_config_args(list(args))
    given = sys.argv[1:] if args is None else list(args)
    if not given or given[0] not in SUBCOMMANDS:  # `python -m lab.fit --config ...` means `fit`
        if args is None:
            sys.argv[1:1] = ["fit"]
        else:
            args = ["fit", *given]
    # Quiet by default: Lightning's "GPU available", "TPU available", logger tips and "Seed set to".
    quiet_lightning()
    # A latent target keeps its frozen autoencoder in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    # Called from Python (a study, references) while the calling script has its own sys.argv: args win, as meant.
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
    with exit_on_lab_error("lab.fit"):
        return FitCLI(
            PixelDDPM,
            MembershipDataModule,
            subclass_mode_model=True,
            parser_class=FitParser,
            save_config_kwargs={"overwrite": True},
            args=args,
        )


def cli() -> None:
    """The `lab-fit` console script: `main` without its return value (which would be the exit status)."""
    main()


if __name__ == "__main__":
    main()
