"""The distribution installs outside a checkout: configs inside the package, console scripts,
the study's default config found from anywhere, and its own name (the import stays `lab`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A plain (non-editable) install of this checkout, without dependencies (they are this venv's)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    return target


def run_outside(installed, tmp_path, *cmd):
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run(list(cmd), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_an_install_outside_the_checkout_runs_the_study_with_its_default_config(installed, tmp_path):
    assert (installed / "lab" / "configs" / "study" / "mnist.yaml").is_file()
    assert list(installed.glob("diffusion_mia_lab-*.dist-info"))
    where = run_outside(installed, tmp_path, sys.executable, "-c", "import lab; print(lab.__file__, lab.__version__)")
    assert where.stdout.startswith(str(installed)) and "unknown" not in where.stdout
    shown = run_outside(installed, tmp_path, sys.executable, "-m", "lab.study", "--print_config")
    assert shown.returncode == 0, shown.stderr
    assert "seeds:" in shown.stdout and "fit_config: configs/study/ddpm_mnist_fit.yaml" in shown.stdout
    helped = run_outside(installed, tmp_path, sys.executable, "-m", "lab.study", "--help")
    assert helped.returncode == 0 and "--seeds" in helped.stdout


@pytest.mark.parametrize("script", ["lab-fit", "lab-attack", "lab-study", "lab-infer"])
def test_console_scripts(installed, tmp_path, script):
    done = run_outside(installed, tmp_path, str(installed / "bin" / script), "--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout.lower()


@pytest.mark.parametrize("cli", ["lab.attack", "lab.study", "lab.infer"])
def test_help_and_typos_come_without_loading_torch(cli):
    """`--help` and a misspelt option answer at once: torch and Lightning load only to do the work."""
    code = (
        f"import sys; sys.argv = ['{cli}', '--help']\nimport {cli} as m\n"
        "try:\n    m.main()\nexcept SystemExit:\n    pass\n"
        "print('loaded:', sorted(n for n in ('torch', 'lightning', 'diffusers') if n in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.stdout.strip().endswith("loaded: []"), done.stdout[-300:] + done.stderr[-300:]


def test_the_registry_resolves_every_attack_lazily():
    """One line per attack in `lab.attacks.REGISTRY`: importing the package loads no attack (nor torch),
    and every name resolves to an attack class whose module is the one the registry names."""
    code = (
        "import sys, lab.attacks as a\n"
        "print(sorted(m for m in sys.modules if m.startswith('lab.attacks.') or m in ('torch', 'lightning')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
    from lab.attacks import ATTACK_NAMES, ATTACKS, REGISTRY, Attack

    assert ATTACK_NAMES == tuple(REGISTRY) == tuple(ATTACKS)
    for name, spec in REGISTRY.items():
        cls = ATTACKS[name]
        assert issubclass(cls, Attack) and cls.__module__ == "lab.attacks." + spec.split(":")[0], name
