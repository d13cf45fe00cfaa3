"""Where the lab's own configs are: shipped inside the package (`lab/configs/`), so that an install
outside a checkout runs `python -m lab.study` and `--config configs/...` as the README shows.

In a checkout, `configs/` is a link to `lab/configs/`; anywhere else a path `configs/<x>` that does
not exist under the working directory is read from the package.
"""

from __future__ import annotations

from pathlib import Path

PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"
DEFAULT_STUDY = "configs/study/mnist.yaml"


def resolve_config(path: str) -> str:
    """`path` as given if it exists; else, for `configs/<x>`, the packaged copy if there is one."""
    p = Path(path)
    if p.exists() or not p.parts or p.parts[0] != "configs":
        return path
    packaged = PACKAGED_CONFIGS.joinpath(*p.parts[1:])
    return str(packaged) if packaged.exists() else path


def resolve_config_args(args: list[str]) -> list[str]:
    """Command-line arguments with every `--config`/`--fit_config` value resolved (`--x v` or `--x=v`)."""
    out, names = [], ("--config", "--fit_config")
    for i, a in enumerate(args):
        if i > 0 and args[i - 1] in names:
            a = resolve_config(a)
        elif "=" in a and a.split("=", 1)[0] in names:
            key, value = a.split("=", 1)
            a = f"{key}={resolve_config(value)}"
        out.append(a)
    return out
