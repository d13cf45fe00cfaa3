"""lab: train diffusion targets on known member sets and attack them with membership inference."""

import warnings

from importlib import metadata

from lab.errors import LabError

try:
    __version__ = metadata.version("lab")
except metadata.PackageNotFoundError:  # run from a checkout without installing
    __version__ = "unknown"

# torch 2.13 deprecates LeafSpec(), which Lightning 2.6 calls on every batch: one line a batch that
# no user of the lab can act on (it filled the README's first command's log).
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

__all__ = ["LabError", "__version__"]
