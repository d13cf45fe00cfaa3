"""Image sources, membership splits and the LightningDataModule that serves them."""

from lab.data.datamodule import MembershipDataModule, split_from_folders
from lab.data.sources import SOURCES, RawImages, load_source, to_model_tensor
from lab.data.split import MembershipSplit, draw_split

__all__ = [
    "MembershipDataModule",
    "MembershipSplit",
    "RawImages",
    "SOURCES",
    "draw_split",
    "load_source",
    "split_from_folders",
    "to_model_tensor",
]
