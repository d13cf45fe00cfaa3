"""LightningDataModule that draws a membership split and serves its members for training.

At fit time it writes `split.json` into the run folder (`trainer.default_root_dir`); every
exported target carries a copy. Attacks rebuild the same data from that file alone
(`MembershipDataModule.from_split_file`), which checks the content hash.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from opacus.data_loader import DPDataLoader
from torch.utils.data import DataLoader, Dataset

from lab.data.sources import RawImages, load_source, to_model_tensor
from lab.data.split import MembershipSplit, content_hash, draw_split
from lab.errors import LabError, check_number

SPLIT_FILE = "split.json"


def load_member_and_nonmember_sources(
    member: tuple[str, str | None], nonmember: tuple[str, str | None], captions: str | None = None
) -> tuple[RawImages, RawImages]:
    """Each (name, root) loaded once: the same object for both when there is no dataset shift."""
    member_raw = load_source(*member, captions=captions)
    return member_raw, (member_raw if nonmember == member else load_source(*nonmember, captions=captions))


class SplitDataset(Dataset):
    """(image, row) pairs for chosen rows of the split; `row` indexes `split.ids`."""

    def __init__(self, images: torch.Tensor, rows: list[int]):
        self.images, self.rows = images, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = self.rows[i]
        return self.images[row], row


class MembershipDataModule(pl.LightningDataModule):
    """Members and non-members drawn disjointly from a source, with a seed.

    Args:
        source: 'mnist' (bundled), 'digits' (sklearn, 8x8 upsampled), 'folder' or 'cifar10'.
        root: local path for 'folder' / 'cifar10'.
        members, nonmembers: how many of each to draw.
        nonmember_source, nonmember_root: draw non-members from another source (dataset shift).
        image_size, channels: what the target sees.
        seed: the split's seed (independent of the training seed).
        validation_fraction: share of each side in the validation half (the rest is test).
        batch_size, num_workers: for the training loader (members only).
        split_file: reuse an existing split instead of drawing one; the draw arguments are ignored.
        captions: give every example a caption (text-to-image targets): the metadata column that holds
            them in a folder's `metadata.jsonl` / `metadata.csv` (Hugging Face's image-folder
            convention, e.g. "text"); bundled MNIST and digits generate theirs from the labels.
    """

    def __init__(
        self,
        source: str = "mnist",
        root: str | None = None,
        members: int = 128,
        nonmembers: int = 128,
        nonmember_source: str | None = None,
        nonmember_root: str | None = None,
        image_size: int = 32,
        channels: int = 1,
        seed: int = 0,
        validation_fraction: float = 0.5,
        batch_size: int = 64,
        num_workers: int = 0,
        split_file: str | None = None,
        captions: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        check_number("data.batch_size", batch_size, minimum=1, integer=True)
        check_number("data.num_workers", num_workers, minimum=0, integer=True)
        if split_file is None:
            check_number("data.image_size", image_size, minimum=1, integer=True)
            check_number("data.members", members, minimum=1, integer=True)
            check_number("data.nonmembers", nonmembers, minimum=1, integer=True)
            if channels not in (1, 3) or isinstance(channels, bool):
                raise LabError(f"data.channels must be 1 or 3, got {channels!r}")
        self.batch_size, self.num_workers = batch_size, num_workers
        self.poisson_sampling = False
        if split_file is not None:
            self.split = MembershipSplit.load(split_file)
            self.images = self._load_split_images(self.split)
            return
        # Load eagerly: bad input fails here, before the trainer writes anything.
        nm_source = nonmember_source or source
        nm_root = nonmember_root if nonmember_source else root
        member_raw, nonmember_raw = load_member_and_nonmember_sources((source, root), (nm_source, nm_root), captions)
        ids, roles, splits = draw_split(
            member_raw.ids, nonmember_raw.ids, members, nonmembers, seed, validation_fraction
        )
        raw = self._raw_by_id(ids, member_raw, nonmember_raw)
        text = self._captions_by_id(ids, member_raw, nonmember_raw) if captions else None
        self.split = MembershipSplit(
            ids=ids,
            roles=roles,
            eval_splits=splits,
            seed=seed,
            sources={"member": {"name": source, "root": root}, "nonmember": {"name": nm_source, "root": nm_root}},
            preprocess={
                "image_size": image_size,
                "channels": channels,
                **({"captions": captions} if captions else {}),
            },
            content_hash=content_hash(ids, raw, text),
            captions=text,
        )
        self.images = to_model_tensor(raw, image_size, channels)

    @classmethod
    def from_split_file(cls, path: str | Path, batch_size: int = 64, num_workers: int = 0) -> MembershipDataModule:
        return cls(split_file=str(path), batch_size=batch_size, num_workers=num_workers)

    @staticmethod
    def _raw_by_id(ids, *sources):
        by_id = {}
        for src in sources:
            by_id.update(zip(src.ids, src.images))
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise LabError(f"{len(missing)} examples named by the split are missing from the data, e.g. {missing[0]}")
        return [by_id[i] for i in ids]

    @staticmethod
    def _captions_by_id(ids, *sources) -> list[str]:
        by_id = {}
        for src in sources:
            by_id.update(zip(src.ids, src.captions))
        return [by_id[i] for i in ids]

    @classmethod
    def _load_split_images(cls, split: MembershipSplit) -> torch.Tensor:
        m, n = split.sources["member"], split.sources["nonmember"]
        column = split.preprocess.get("captions")
        if (column is None) != (split.captions is None):
            raise LabError("the split file's rows and its preprocess disagree on whether the examples have captions")
        loaded = load_member_and_nonmember_sources((m["name"], m.get("root")), (n["name"], n.get("root")), column)
        raw = cls._raw_by_id(split.ids, *loaded)
        text = cls._captions_by_id(split.ids, *loaded) if column else None
        split.check_hash(content_hash(split.ids, raw, text))
        if text != split.captions:  # the hash covers them; this names the cause
            raise LabError("the split file's captions differ from the data's (edited after the target was trained?)")
        return to_model_tensor(raw, split.preprocess["image_size"], split.preprocess["channels"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def dataset(self, role: str | None = None, eval_split: str | None = None) -> SplitDataset:
        return SplitDataset(self.images, self.split.select(role, eval_split))

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.trainer is not None:
            self._write_split(Path(self.trainer.default_root_dir) / SPLIT_FILE)

    def _write_split(self, path: Path) -> None:
        """Write the split beside the run; refuse to mix runs with different splits in one folder."""
        if path.exists():
            old = MembershipSplit.load(path)
            if (old.ids, old.roles, old.eval_splits, old.content_hash) != (
                self.split.ids,
                self.split.roles,
                self.split.eval_splits,
                self.split.content_hash,
            ):
                raise LabError(
                    f"{path} holds a different membership split: use another trainer.default_root_dir or remove it"
                )
            return
        if self.trainer.is_global_zero:
            self.split.save(path)

    def use_poisson_sampling(self) -> DataLoader:
        """From now on, serve members by Poisson sampling (rate batch_size / members), as DP-SGD needs."""
        self.poisson_sampling = True
        return self.train_dataloader()

    def train_dataloader(self) -> DataLoader:
        loader = DataLoader(
            self.dataset(role="member"),
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
        return DPDataLoader.from_data_loader(loader) if self.poisson_sampling else loader


def split_from_folders(
    members: str,
    nonmembers: str,
    image_size: int,
    channels: int,
    seed: int = 0,
    validation_fraction: float = 0.5,
    captions: str | None = None,
) -> MembershipDataModule:
    """Every image in `members` is a member and every one in `nonmembers` a non-member (each side
    halved into validation/test with `seed`): ground truth for a pretrained model the user knows
    the training set of. The same image in both folders is refused: it would be both. With
    `captions` (a metadata column), each folder's `metadata.jsonl` / `metadata.csv` captions its images."""
    if Path(members).resolve() == Path(nonmembers).resolve():
        raise LabError(f"the member and non-member folders are the same folder: {members}")
    member_raw, nonmember_raw = load_source("folder", members, captions), load_source("folder", nonmembers, captions)
    if clash := set(member_raw.ids) & set(nonmember_raw.ids):
        raise LabError(f"the member and non-member folders share names (e.g. {sorted(clash)[0]}): rename one folder")
    seen = {np.ascontiguousarray(a).tobytes(): i for i, a in zip(member_raw.ids, member_raw.images)}
    for i, a in zip(nonmember_raw.ids, nonmember_raw.images):
        if (twin := seen.get(np.ascontiguousarray(a).tobytes())) is not None:
            raise LabError(f"the same image is in both folders: {twin} (member) and {i} (non-member)")
    return MembershipDataModule(
        source="folder",
        root=members,
        members=len(member_raw),
        nonmember_source="folder",
        nonmember_root=nonmembers,
        nonmembers=len(nonmember_raw),
        image_size=image_size,
        channels=channels,
        seed=seed,
        validation_fraction=validation_fraction,
        captions=captions,
    )
