"""lab: train diffusion targets on known member sets and attack them with membership inference."""

from lab.errors import LabError

__all__ = ["LabError"]
