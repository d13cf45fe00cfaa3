"""Mutation check: plant plausible mistakes in the lab, one at a time, and see that a test fails.

Each mutant replaces one exact snippet of a source file in a scratch copy of the repository (the
working tree is never touched), then runs the fast formula and metric tests there. A mutant that
no test catches is a SURVIVOR: the suite would not notice that mistake. Goal: zero survivors.

    .venv/bin/python scripts/mutants.py            # all mutants (a few minutes on 2 CPU cores)
    .venv/bin/python scripts/mutants.py --list     # what they are
    .venv/bin/python scripts/mutants.py pian-unnormalised lira-in-out-swapped
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/test_formulas.py",
    "tests/test_formulas_learned.py",
    "tests/test_formulas_sima.py",
    "tests/test_metrics.py",
    "tests/test_learned.py",
    "tests/test_faults.py::test_a_resumed_fit_is_bit_identical_to_an_uninterrupted_one",
    "tests/test_formulas_rmia.py",
    "tests/test_attacks.py::test_attacks_on_one_target_share_identical_denoiser_calls",
    "tests/test_infer.py::test_false_positive_rate_stays_at_alpha_and_a_leaky_scorer_is_caught",
    "tests/test_infer.py::test_a_small_shift_in_many_examples_is_detected_where_one_example_is_not",
    "tests/test_formulas_clid.py",
    "tests/test_text2image.py::test_conditioned_scores_do_not_depend_on_batching_or_on_which_attacks_share_calls",
    "tests/test_text2image.py::test_bundled_digits_get_generated_captions_that_enter_the_hash_and_fingerprint",
    "tests/test_text2image.py::test_folder_captions_from_jsonl_and_csv_round_trip_through_the_split_file",
    "tests/test_hub_layouts.py",
    "tests/test_formulas_prediction.py",
    "tests/test_sdxl.py::test_the_adapter_conditions_as_the_sdxl_pipeline_does[hub]",
    "tests/test_hub_repositories.py::test_the_flat_ddpm_cifar10_layout_fine_tunes_and_its_export_is_attacked",
    "tests/test_sdxl.py::test_an_sdxl_target_fine_tunes_keeping_its_scheduler_and_prediction_type",
]

# name: (file, exact original snippet, its replacement)
MUTANTS = {
    # the eight mistakes the suite must catch (issue "Numbers a reviewer can trust")
    "pian-unnormalised": ("lab/attacks/pia.py", "        if self.normalized:\n", "        if False:\n"),
    "secmi-up-step-swapped": (
        "lab/attacks/secmi.py",
        "self.ddim_step(x_tilde, t_low, self.t_sec, self.eps(x_tilde, t_low))",
        "self.ddim_step(x_tilde, self.t_sec, t_low, self.eps(x_tilde, t_low))",
    ),
    "learned-validation-in-fold": (
        "lab/attacks/base.py",
        "self.fit(values[val_idx[fit_i]], member[val_idx[fit_i]])",
        "self.fit(values[val_idx], member[val_idx])",
    ),
    "lira-in-out-swapped": (
        "lab/attacks/lira.py",
        "return _log_normal(target, mu_in, s_in) - _log_normal(target, mu_out, s_out)",
        "return _log_normal(target, mu_out, s_out) - _log_normal(target, mu_in, s_in)",
    ),
    "gradient-norm-sign": ("lab/attacks/gradient_norm.py", "scores.append(-torch.sqrt(", "scores.append(torch.sqrt("),
    "noise-ignores-draw": (
        "lab/attacks/base.py",
        "SeedSequence([self.seed, row, draw])",
        "SeedSequence([self.seed, row, 0])",
    ),
    "bootstrap-90": ("lab/metrics.py", "level: float = 0.95", "level: float = 0.90"),
    "bootstrap-unstratified": (
        "lab/metrics.py",
        "idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])",
        "idx = rng.choice(len(scores), len(scores))",
    ),
    # more plausible slips
    "graybox-clips": ("lab/attacks/graybox.py", "clip_sample=False, thresholding=False", "thresholding=False"),
    "gsa-leaves-of-20": ("lab/attacks/gsa.py", "min_samples_leaf=1,", "min_samples_leaf=20,"),
    "pfami-shared-noise": ("lab/attacks/pfami.py", "draw=j * n + c", "draw=j"),
    "pfami-difference-not-ratio": (
        "lab/attacks/pfami.py",
        "((losses[1:] - losses[0]) / losses[0].clamp_min(1e-12))",
        "(losses[1:] - losses[0])",
    ),
    "pia-random-noise": ("lab/attacks/pia.py", "eps0 = self.eps(x0, 0)", "eps0 = self.noise(x0, rows)"),
    "pia-abs-not-pow": ("lab/attacks/pia.py", ".abs().pow(self.p)", ".pow(2)"),
    "loss-sum-not-mean": ("lab/attacks/loss.py", "err.pow(2).flatten(1).mean(1)", "err.pow(2).flatten(1).sum(1)"),
    "multistep-median-upper": (
        "lab/attacks/multistep_loss.py",
        '"median": lambda x: x.median(1).values',
        '"median": lambda x: x.quantile(0.5, 1)',
    ),
    "secmi-mean-not-sum": (
        "lab/attacks/secmi.py",
        "return -self.error_maps(x0).pow(2).flatten(1).sum(1)",
        "return -self.error_maps(x0).pow(2).flatten(1).mean(1)",
    ),
    "gsa2-as-gsa1": (
        "lab/attacks/gsa.py",
        "    per_timestep_backward = True\n",
        "    per_timestep_backward = False\n",
    ),
    "reconstruction-no-clamp": (
        "lab/attacks/reconstruction.py",
        "self.to_image(z_hat).clamp(-1, 1)",
        "self.to_image(z_hat)",
    ),
    "blackbox-squared": (
        "lab/attacks/blackbox.py",
        "-torch.cdist(x0.flatten(1), samples).min(1).values",
        "-torch.cdist(x0.flatten(1), samples).pow(2).min(1).values",
    ),
    "lira-per-example-variance": ("lab/attacks/lira.py", "if pooled:", "if False:"),
    "lira-offline-sign": (
        "lab/attacks/lira.py",
        "return (mu_out - target) / s_out",
        "return (target - mu_out) / s_out",
    ),
    "lira-references-halves": (
        "lab/attacks/lira.py",
        'members = pool.roles.count("member") if members is None',
        "members = n // 2 if members is None",
    ),
    "two-stage-highest-threshold": (
        "lab/metrics.py",
        "return float(thresholds[fpr <= fpr_target].min())",
        "return float(thresholds[fpr <= fpr_target][1])",
    ),
    "two-stage-unmeasurable": (
        "lab/metrics.py",
        '    if (~is_member).sum() * fpr_target < 1:\n        return float("nan")\n    fpr, _, thresholds',
        "    fpr, _, thresholds",
    ),
    "resume-without-random-states": (
        "lab/targets/ddpm.py",
        '            set_rng_states(checkpoint["rng_states"])',
        "            pass",
    ),
    "sima-noised-input": (
        "lab/attacks/sima.py",
        "return -self.norm(x0)",
        "return -self.norm(x0 + self.noise(x0, rows))",
    ),
    "sima-wrong-sign": ("lab/attacks/sima.py", "return -self.norm(x0)", "return self.norm(x0)"),
    "rmia-counts-itself": ("lab/attacks/rmia.py", "(wins & ~itself).sum(1)", "wins.sum(1)"),
    "rmia-greater-or-equal": (
        "lab/attacks/rmia.py",
        "ratio[:, None] / ratio[None, z] > gamma",
        "ratio[:, None] / ratio[None, z] >= gamma",
    ),
    "rmia-offline-uncorrected": (
        "lab/attacks/rmia.py",
        "p_x = 0.5 * ((1 + offline_a) * mean_out + (1 - offline_a))",
        "p_x = mean_out",
    ),
    "rmia-online-plain-mean": ("lab/attacks/rmia.py", "p_x = 0.5 * (mean_in + mean_out)", "p_x = p_refs.mean(0)"),
    "cdi-scorer-sees-test-halves": (
        "lab/dataset_inference.py",
        "model.fit(np.concatenate([owner[o_ctrl], heldout[h_ctrl]]), "
        "np.r_[np.ones(len(o_ctrl)), np.zeros(len(h_ctrl))])",
        "model.fit(np.concatenate([owner, heldout]), np.r_[np.ones(len(owner)), np.zeros(len(heldout))])",
    ),
    "cdi-two-sided": ("lab/dataset_inference.py", 'equal_var=False, alternative="greater"', "equal_var=False"),
    "shared-calls-ignore-timestep": (
        "lab/attacks/base.py",
        "        for part in parts:",
        "        for part in parts[:1]:",
    ),
    # text-to-image targets: conditioning and CLiD
    "shared-calls-ignore-prompt": (
        "lab/attacks/base.py",
        "parts = (x_t, t) if context is None else (x_t, t, *context)",
        "parts = (x_t, t)",
    ),
    "empty-prompt-is-the-caption": ("lab/attacks/base.py", 'if self.condition == "empty":', "if False:"),
    "prompt-not-passed-to-unet": (
        "lab/targets/families/stable_diffusion.py",
        "return unet(x_t, t, encoder_hidden_states=context[0]).sample",
        "return unet(x_t, t, encoder_hidden_states=context[0] * 0).sample",
    ),
    "per-example-prompt-of-first-example": (
        "lab/attacks/base.py",
        "tuple(part[i : i + 1] for part in whole)",
        "tuple(part[:1] for part in whole)",
    ),
    "caption-not-hashed": (
        "lab/data/split.py",
        "        if captions is not None:\n            text =",
        "        if False:\n            text =",
    ),
    "clid-gap-sign": (
        "lab/attacks/clid.py",
        "gaps = [self.loss(x0, draws, self.embed(list(v))) - full for v in variants]",
        "gaps = [full - self.loss(x0, draws, self.embed(list(v))) for v in variants]",
    ),
    "clid-noise-not-shared": (
        "lab/attacks/clid.py",
        "gaps = [self.loss(x0, draws, self.embed(list(v))) - full for v in variants]",
        "gaps = [self.loss(x0, draws[::-1], self.embed(list(v))) - full for v in variants]",
    ),
    "clid-thirds-overlap": ("lab/attacks/clid.py", "caption[n // 3 : 2 * n // 3]", "caption[: 2 * n // 3]"),
    "clid-th-last-best-alpha": (
        "lab/attacks/clid_learned.py",
        "ALPHAS[int(np.argmax(aucs))]",
        "ALPHAS[len(aucs) - 1 - int(np.argmax(aucs[::-1]))]",
    ),
    "clid-vec-nonmember-probability": (
        "lab/attacks/clid_learned.py",
        "predict_proba(features.double().numpy())[:, 1]",
        "predict_proba(features.double().numpy())[:, 0]",
    ),
    "learned-test-refit": (
        "lab/attacks/base.py",
        "scores[test_idx] += self.decision(values[test_idx]).double().numpy() / folds",
        "scores[test_idx] = self.decision(values[test_idx]).double().numpy()",
    ),
    # prediction types: the conversions to eps_hat and the v objective
    "v-to-eps-sign": (
        "lab/targets/families/base.py",
        "return abar.sqrt() * out + (1 - abar).sqrt() * x_t",
        "return abar.sqrt() * out - (1 - abar).sqrt() * x_t",
    ),
    "x0-to-eps-wrong-scale": (
        "lab/targets/families/base.py",
        "return (x_t - abar.sqrt() * out) / (1 - abar).sqrt()",
        "return (x_t - out) / (1 - abar).sqrt()",
    ),
    "v-objective-is-eps-target": (
        "lab/targets/families/base.py",
        "return abar.sqrt() * noise - (1 - abar).sqrt() * x0",
        "return noise",
    ),
    "graybox-sampler-gets-eps-hat": (
        "lab/attacks/graybox.py",
        "self.sampler.step(self.model_output(x_t, t), t, x_t",
        "self.sampler.step(self.eps(x_t, t), t, x_t",
    ),
    # Hub layouts: an fp16-variant-only folder, fp16 weights, CompVis' unscaled LDM latents
    "variant-not-detected": (
        "lab/targets/load.py",
        "    variant = weight_variant(path, index)\n",
        "    variant = None\n",
    ),
    "fp16-not-upcast": (
        "lab/targets/load.py",
        "            module.to(torch.float32)  #",
        "            pass  #",
    ),
    "ldm-default-scale": (
        "lab/targets/families/latent.py",
        'if not stated_scaling_factor(path / "vqvae"):',
        "if False:",
    ),
    # SDXL: the adapter's conditioning, as StableDiffusionXLPipeline forms it
    "sdxl-last-hidden-state": (
        "lab/targets/families/sdxl.py",
        "hidden.append(out.hidden_states[-2])",
        "hidden.append(out.hidden_states[-1])",
    ),
    "sdxl-pooled-of-first-encoder": (
        "lab/targets/families/sdxl.py",
        "            if out[0].ndim == 2:  # the pooled output of the projecting (final) encoder\n"
        "                pooled = out[0]\n",
        "            if pooled is None:\n                pooled = out[0].mean(1) if out[0].ndim == 3 else out[0]\n",
    ),
    "sdxl-crop-is-size": (
        "lab/targets/families/sdxl.py",
        "[[side, side, 0, 0, side, side]]",
        "[[side, side, side, side, side, side]]",
    ),
    "sdxl-empty-is-embedded": (
        "lab/targets/families/sdxl.py",
        "        if not self.force_zeros:\n",
        "        if True:\n",
    ),
    "sdxl-time-ids-not-passed": (
        "lab/targets/families/sdxl.py",
        'added = {"text_embeds": pooled, "time_ids": time_ids}',
        'added = {"text_embeds": pooled, "time_ids": time_ids * 0}',
    ),
    "finetune-drops-base-scheduler": (
        "lab/targets/text2image.py",
        "        if self.base_scheduler is not None:\n            return self.base_scheduler\n"
        "        return DDIMScheduler.from_config(self.scheduler.config, steps_offset=1)",
        "        return DDIMScheduler.from_config(self.scheduler.config, steps_offset=1)",
    ),
    "flat-layout-not-fine-tuned": (
        "lab/targets/ddpm.py",
        "(folder, folder) if is_flat(folder) else",
        "(folder, folder) if False else",
    ),
}


def scratch_copy() -> Path:
    """The repository's tracked and untracked (not ignored) files, copied into a temporary folder."""
    files = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    dest = Path(tempfile.mkdtemp(prefix="lab_mutants_"))
    for f in filter(None, files):
        if (ROOT / f).is_symlink():  # configs -> lab/configs
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(ROOT / f), dest / f)
        elif (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    return dest


def run_tests(repo: Path) -> tuple[bool, str]:
    """True when every test passes. The scratch copy comes first on sys.path, before the editable install."""
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    return proc.returncode == 0, last


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="mutants to run (default: all)")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.list:
        for name, (path, old, new) in MUTANTS.items():
            print(f"{name:30s} {path}: {old.strip()[:50]!r} -> {new.strip()[:50]!r}")
        return 0
    if unknown := [n for n in args.names if n not in MUTANTS]:
        ap.error(f"unknown mutants {unknown}; see --list")
    repo = scratch_copy()
    try:
        ok, last = run_tests(repo)
        if not ok:
            print(f"the unmutated suite fails ({last}): fix that first", file=sys.stderr)
            return 2
        survivors = []
        for name in args.names or MUTANTS:
            path, old, new = MUTANTS[name]
            source = (repo / path).read_text()
            if source.count(old) != 1:
                print(f"{name:30s} STALE: the snippet is not found exactly once in {path}", flush=True)
                survivors.append(name)
                continue
            (repo / path).write_text(source.replace(old, new))
            start = time.perf_counter()
            try:
                passed, last = run_tests(repo)
            finally:
                (repo / path).write_text(source)
            verdict = "SURVIVED" if passed else "killed"
            print(f"{name:30s} {verdict:8s} {time.perf_counter() - start:5.0f} s  {last}", flush=True)
            if passed:
                survivors.append(name)
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    print(f"\n{len(survivors)} survivor(s){': ' + ', '.join(survivors) if survivors else ''}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
