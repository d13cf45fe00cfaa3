"""lab: train diffusion targets on known member sets and attack them with membership inference."""

import warnings
from importlib import metadata

from lab.errors import LabError

try:
    __version__ = metadata.version("diffusion-mia-lab")
except metadata.PackageNotFoundError:  # run from a checkout without installing
    __version__ = "unknown"

# torch 2.13 deprecates LeafSpec(), which Lightning 2.6 calls on every batch: one line a batch that
# no user of the lab can act on (it filled the README's first command's log).
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

__all__ = ["LabError", "__version__", "evaluate"]


def __getattr__(name: str):
    """`lab.evaluate` (the Python API, `lab.api`) imported on first use: `import lab` stays light."""
    if name == "evaluate":
        from lab.api import evaluate

        return evaluate
    raise AttributeError(f"module 'lab' has no attribute {name!r}")
