"""The attack base class: a LightningModule holding a frozen target.

`trainer.predict(attack, loader)` maps each batch of (images, split rows) to one score per
example (higher = more likely a member) and the number of denoiser calls each example cost,
so device, precision and strategy come from the Trainer. Randomness is drawn per example from
(seed, split row), so scores do not depend on batch size, order or the number of processes.

On a latent target the images are first encoded by the target's autoencoder (s * posterior
mean: deterministic) and attacked in latent space, as SecMI and PIA do on latent models. Attacks
that work on the images themselves (`pixel_input`) get pixels and call `to_latent` / `to_image`.

Attacks speak to the target's family adapter (`lab.targets.families`) only: it makes the denoiser
call with its conditioning, the forward process, the conversions of the model's output to a noise
or clean-sample prediction, and the latent convention of its pipeline.

On a text-to-image target every denoiser call is conditioned: `bind(target, condition="caption")`
embeds each example's caption (from the split, or a batch's third element) with the target's text
encoder as Stable Diffusion does, `condition="empty"` embeds the empty prompt "" instead (the
unconditional branch of classifier-free guidance), as SecMI and PIA report both.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager

import lightning.pytorch as pl
import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from lab.data.split import MembershipSplit
from lab.errors import LabError
from lab.targets.families import PREDICTION_TYPES
from lab.targets.target import Target


class Attack(pl.LightningModule):
    """Subclasses implement `score(x0, rows)`; learned attacks subclass `LearnedAttack`."""

    learned = False
    sweep_setting: str | None = None  # the setting a timestep sweep varies ("timestep", or "timesteps" as [t])
    needs_grad = False  # gradient attacks: the runner turns Lightning's inference mode off
    pixel_input = False  # True: score() gets images even on latent targets
    conditional_ok = True  # False: refuses text-to-image targets (says why in `unconditional_only`)
    uses_condition = True  # False: the score is the same whatever `condition` is (not run again with the empty prompt)
    unconditional_only = ""
    text_to_image_only = ""  # non-empty: refuses unconditional targets, saying why

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = seed
        self.unet = None
        self.autoencoder = None
        self._calls = 0
        self._grads = 0
        self._reused = 0
        self._sharing = False  # only inside predict_step, without gradients
        self.cache = None
        self.setup_calls = 0  # one-off denoiser calls per target (e.g. generating samples)
        self.text_encoder = self.tokenizer = self.captions = self.condition = self.batch_captions = None
        self.text_encoder_2 = self.tokenizer_2 = None  # SDXL's second text encoder
        self.family = None  # the bound target's adapter
        self._context = None  # the prompt context of the batch being scored: a tuple of (B, ...) tensors
        self.prediction_type = "epsilon"  # the bound target's (`bind`)
        self.objective = "model"  # the loss family's: the model's own training loss, or "eps" (`error`)

    def settings(self) -> dict:
        """The attack's hyper-parameters, as written into the scores table (with `condition` on a
        text-to-image target)."""
        return {**self.hparams, **({"condition": self.condition} if self.condition else {})}

    def bind(self, target: Target, condition: str = "caption") -> "Attack":
        """Attach a frozen target (its denoiser, noise schedule and autoencoder, if latent; its text encoder,
        tokenizer and the split's captions, if text-to-image, conditioned on `condition`: 'caption' | 'empty')."""
        if condition not in CONDITIONS:
            raise LabError(f"condition must be one of {', '.join(CONDITIONS)}, got {condition!r}")
        if self.text_to_image_only and not target.conditional:
            raise LabError(
                f"{self.registry_name} needs a text-to-image target (Stable Diffusion or SDXL):"
                f" {self.text_to_image_only}"
            )
        if target.conditional and not self.conditional_ok:
            raise LabError(f"{type(self).__name__} does not run on text-to-image targets: {self.unconditional_only}")
        self.family = target.family
        self.text_encoder, self.tokenizer = target.text_encoder, target.tokenizer
        self.text_encoder_2, self.tokenizer_2 = target.text_encoder_2, target.tokenizer_2
        self.condition = condition if target.conditional else None
        self.captions = target.split.captions if target.split is not None else None
        self._empty = None
        self.cache = target.shared.get("denoiser")  # set while `lab.scoring.score_target` runs several attacks
        self.unet = target.unet.eval().requires_grad_(False)
        self.autoencoder = target.autoencoder.eval().requires_grad_(False) if target.autoencoder is not None else None
        self.num_train_timesteps = int(target.scheduler.config.num_train_timesteps)
        self.prediction_type = target.prediction_type
        if self.prediction_type not in PREDICTION_TYPES:
            raise LabError(f"the denoiser predicts {self.prediction_type!r}; supported: {', '.join(PREDICTION_TYPES)}")
        # a plain attribute, not a buffer: a "16-true"/"bf16-true" Trainer converts buffers, and abar_t near 1
        # rounds to 1 in 16 bits (no noise added, divisions by sqrt(1 - abar) = 0); the schedulers keep it in fp32
        self._abars = {"cpu": target.scheduler.alphas_cumprod.detach().clone().float().cpu()}
        self.check_timesteps()
        return self

    def check_timesteps(self) -> None:
        """Raise LabError for timesteps the target's schedule lacks (subclasses call `check_range`)."""

    def check_range(self, timesteps: list[int], what: str = "timesteps") -> None:
        """LabError unless every t in `timesteps` is a step of the bound target's schedule."""
        bad = [t for t in timesteps if not 0 <= t < self.num_train_timesteps]
        if bad:
            raise LabError(
                f"{self.registry_name}: {what} {bad} are outside the target's schedule"
                f" [0, {self.num_train_timesteps - 1}]"
            )
        zero = [t for t in timesteps if float(self.alphas_cumprod[t]) <= 0]
        if zero:
            raise LabError(
                f"{self.registry_name}: {what} {zero} have abar_t = 0 (a zero-terminal-SNR schedule): x_t holds no"
                " trace of x0 there; choose earlier timesteps"
            )

    @property
    def registry_name(self) -> str:
        """The attack's registry name ('pia'), as errors and tables name it."""
        from lab.attacks import REGISTRY

        spec = f"{type(self).__module__.removeprefix('lab.attacks.')}:{type(self).__name__}"
        return next((n for n, s in REGISTRY.items() if s == spec), type(self).__name__.lower())

    def cost(self) -> tuple[int, int]:
        """(denoiser calls, backward passes) that each example costs at these settings, as the module's
        docstring states. `score_target` counts both as they happen; the contract test in
        tests/test_attacks.py holds every registered attack to its own declaration."""
        raise NotImplementedError(f"{type(self).__name__} does not declare its cost")

    # --- building blocks -------------------------------------------------------------------

    def to_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> what the denoiser models, by the family's convention (identity on pixel targets)."""
        return self.family.to_latent(self.autoencoder, x)

    def to_image(self, z: torch.Tensor) -> torch.Tensor:
        """What the denoiser models -> images (identity on pixel targets)."""
        return self.family.to_image(self.autoencoder, z)

    def eps(self, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """eps_hat(x_t, t): one denoiser call, its output converted to a noise prediction by the target's
        prediction type (with abar = abar_t and out the model's output):

            epsilon:       eps_hat = out
            v_prediction:  eps_hat = sqrt(abar) out + sqrt(1 - abar) x_t      (v = sqrt(abar) e - sqrt(1 - abar) x0)
            sample:        eps_hat = (x_t - sqrt(abar) out) / sqrt(1 - abar)
        """
        out = self.model_output(x_t, t)
        if self.prediction_type == "epsilon":
            return out
        return self.family.eps_from(out, x_t, self._abar_like(t, x_t), self.prediction_type)

    def error(self, x_t: torch.Tensor, t: int | torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The loss family's residual at x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise. `objective: model`
        (the default): the model's output minus its own training target, so its squared norm is the loss
        the target was trained on (noise for epsilon, sqrt(abar) noise - sqrt(1 - abar) x0 for
        v_prediction, x0 for sample); `objective: eps`: eps_hat - noise, the epsilon-space loss."""
        if self.objective == "eps" or self.prediction_type == "epsilon":
            return self.eps(x_t, t) - noise
        out = self.model_output(x_t, t)
        return self.family.residual(out, x0, noise, self._abar_like(t, x_t), self.prediction_type)

    def set_objective(self, objective: str) -> None:
        if objective not in OBJECTIVES:
            raise LabError(
                f"{self.registry_name}: objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}"
            )
        self.objective = objective

    def _abar_like(self, t: int | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """abar_t shaped to broadcast against x (one value, or one per example for a tensor of timesteps)."""
        a = self.abar(t if torch.is_tensor(t) else int(t))
        return a.view(-1, *[1] * (x.dim() - 1)) if a.dim() else a

    def model_output(self, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """One batched denoiser call (the raw output); counted once per example. When several attacks
        run on one target, a call another attack already made on the same (denoiser, x_t, t) is served
        from the shared `DenoiserCache` (still counted: it is part of this attack's cost) and counted
        as reused."""
        self._calls += x_t.shape[0]
        if not torch.is_tensor(t):
            t = torch.full((x_t.shape[0],), int(t), device=x_t.device, dtype=torch.long)
        context = self.context_for(x_t.shape[0])
        parts = (x_t, t) if context is None else (x_t, t, *context)
        key = self.cache.key(self.unet, *parts) if self.cache is not None and self._sharing else None
        if key is not None and (hit := self.cache.get(key)) is not None:
            self._reused += x_t.shape[0]
            return hit.to(x_t.device, x_t.dtype)
        out = self.family.denoise(self.unet, x_t, t, context)
        if key is not None:
            self.cache.put(key, out)
        return out

    def context_for(self, n: int) -> tuple | None:
        """The prompt context for a denoiser call on `n` inputs: one per example of the batch, or
        the one example `example(i)` selected, repeated (None on unconditional targets)."""
        c = self._context
        if c is None:
            if self.condition is not None:
                raise LabError(
                    f"{type(self).__name__}: a text-to-image denoiser called outside predict_step"
                    " (no prompt embedding)"
                )
            return None
        rows = c[0].shape[0]
        if rows == n:
            return c
        if rows == 1:
            return tuple(part.expand(n, *part.shape[1:]) for part in c)
        raise LabError(f"{type(self).__name__}: {n} denoiser inputs for {rows} prompt embeddings")

    @contextmanager
    def conditioned_on(self, context: tuple):
        """Denoiser calls inside are conditioned on `context` (what `embed` gives: one row per example)."""
        whole, self._context = self._context, context
        try:
            yield
        finally:
            self._context = whole

    @contextmanager
    def example(self, i: int):
        """Denoiser calls inside are conditioned on example i of the batch alone (per-example loops)."""
        whole = self._context
        self._context = tuple(part[i : i + 1] for part in whole) if whole is not None else None
        try:
            yield
        finally:
            self._context = whole

    def embed(self, prompts: list[str]) -> tuple:
        """The family's prompt context for `prompts` (as its pipeline's `encode_prompt`), without gradients."""
        with torch.no_grad():
            return self.family.embed(self, prompts)

    def batch_context(self, rows: torch.Tensor, captions: list[str] | None) -> tuple | None:
        """The batch's prompt context: each caption, or the unconditional one (the empty prompt, formed once)."""
        if self.condition is None:
            return None
        if self.condition == "empty":
            if self._empty is None:
                with torch.no_grad():
                    self._empty = self.family.unconditional(self)
            return tuple(p.to(self.device).expand(len(rows), *p.shape[1:]) for p in self._empty)
        if captions is None:
            raise LabError(f"{type(self).__name__}: the text-to-image target's examples have no captions")
        return self.embed(list(captions))

    def grad(
        self, loss: torch.Tensor, params: list[torch.Tensor], retain_graph: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """One backward pass d loss / d params; counted once (call it per example)."""
        self._grads += 1
        return torch.autograd.grad(loss, params, retain_graph=retain_graph)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """The target's abar_t for t = 0..T-1, in float32 on the module's device."""
        key = str(self.device)
        if key not in self._abars:
            self._abars[key] = self._abars["cpu"].to(self.device)
        return self._abars[key]

    def abar(self, t: int | torch.Tensor) -> torch.Tensor:
        return self.alphas_cumprod[t]

    def q_sample(self, x0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """x_t by the family's forward process: sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
        return self.family.q_sample(x0, noise, self.abar(t))

    def ddim_step(self, x: torch.Tensor, t_from: int, t_to: int, eps: torch.Tensor) -> torch.Tensor:
        """Deterministic DDIM move (eta = 0) from t_from to t_to, up (inversion) or down."""
        a_from, a_to = self.abar(t_from), self.abar(t_to)
        x0_pred = (x - (1 - a_from).sqrt() * eps) / a_from.sqrt()
        return a_to.sqrt() * x0_pred + (1 - a_to).sqrt() * eps

    def noise(self, x0: torch.Tensor, rows: torch.Tensor, draw: int = 0) -> torch.Tensor:
        """Gaussian noise for each example, seeded by (attack seed, split row, draw index)."""
        out = torch.empty_like(x0, device="cpu")
        for i, row in enumerate(rows.tolist()):
            g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, row, draw]).generate_state(1)[0]))
            out[i] = torch.randn(x0.shape[1:], generator=g)
        return out.to(x0.device, x0.dtype)

    # --- Lightning ---------------------------------------------------------------------------

    def score(self, x0: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def finalize(self, values: torch.Tensor, rows: np.ndarray, split: MembershipSplit) -> np.ndarray:
        """Final scores once every example's `values` are in (one row each, any order): the scores
        themselves here; attacks whose score needs all examples (a classifier, pooled statistics)
        override it."""
        return values.numpy().astype(np.float64)

    def predict_step(self, batch, batch_idx: int = 0) -> dict:
        """(images, split rows) or (images, split rows, captions) -> one value per example."""
        x0, rows, captions = (*batch, None) if len(batch) == 2 else batch
        self._calls = self._grads = self._reused = 0
        if not self.pixel_input:
            with torch.no_grad():
                x0 = self.to_latent(x0)
        self.batch_captions = (
            [self.captions[r] for r in rows.tolist()]
            if captions is None and self.captions is not None
            else list(captions)
            if captions is not None
            else None
        )
        self._context = self.batch_context(rows, self.batch_captions)
        self._sharing = not self.needs_grad and not torch.is_grad_enabled()
        try:
            values = self.features(x0, rows) if self.learned else self.score(x0, rows)
        finally:
            self._sharing = False
            self._context = None
        n = x0.shape[0]
        return {
            "rows": rows.cpu(),
            "values": values.detach().float().cpu(),
            "calls": self._calls / n,
            "grads": self._grads / n,
            "reused": self._reused / n,
        }


CONDITIONS = ("caption", "empty")
OBJECTIVES = ("model", "eps")


class DenoiserCache:
    """Denoiser outputs keyed by (denoiser, input bytes, timesteps), shared by the attacks run on one
    target in one `score_target`: PIA, PIAN and SimA at t = 0 all need eps(x0, 0); `loss` and
    `multistep_loss` draw the same seeded noise. Identical inputs give identical outputs, so a
    reused output equals a recomputed one bit for bit. Kept on the CPU, up to `limit` bytes."""

    def __init__(self, limit: int = 1 << 30):
        self.store: dict = {}
        self.bytes, self.limit = 0, limit

    @staticmethod
    def key(unet, *parts: torch.Tensor) -> tuple:
        """(denoiser, hash of the inputs: x_t, t and the prompt embedding if any)."""
        h = hashlib.blake2b(digest_size=20)
        for part in parts:
            a = part.detach().cpu().contiguous()
            h.update(f"{a.dtype}{tuple(a.shape)}".encode())
            h.update(
                a.flatten().view(torch.uint8).numpy().tobytes()
            )  # raw bytes of any dtype (bfloat16 has no numpy type)
        return id(unet), h.digest()

    def get(self, key: tuple) -> torch.Tensor | None:
        hit = self.store.get(key)
        return None if hit is None else hit.clone()

    def put(self, key: tuple, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if self.bytes + size <= self.limit:
            self.store[key] = value.detach().cpu().clone()
            self.bytes += size


class LearnedAttack(Attack):
    """An attack whose final score comes from a model fit on validation-split features only.

    `features` runs on the target; `fit(features, is_member)` sees validation rows only;
    `decision(features)` scores any rows. `finalize` cross-fits: the validation split is cut into
    `FOLDS` stratified folds; each fold's rows are scored by the model fit on the other folds
    (out-of-fold, so thresholds picked on validation are not fit on their own labels), and each
    test row gets the mean of the same fold models' scores. Validation and test scores thus come
    from the same models, and a threshold picked on one applies to the other.
    """

    learned = True
    FOLDS = 5

    def finalize(self, values: torch.Tensor, rows: np.ndarray, split: MembershipSplit) -> np.ndarray:
        is_val = np.array([split.eval_splits[r] == "validation" for r in rows])
        member = torch.tensor([split.roles[r] == "member" for r in rows])
        val_idx, test_idx = np.flatnonzero(is_val), np.flatnonzero(~is_val)
        folds = min(self.FOLDS, int(member[val_idx].sum()), int((~member[val_idx]).sum()))
        if folds < 2:
            raise LabError(f"{type(self).__name__} needs at least 2 members and 2 non-members in the validation split")
        scores = np.zeros(len(rows))
        for fit_i, held_i in StratifiedKFold(folds, shuffle=True, random_state=self.seed).split(
            val_idx, member[val_idx]
        ):
            self.fit(values[val_idx[fit_i]], member[val_idx[fit_i]])
            scores[val_idx[held_i]] = self.decision(values[val_idx[held_i]]).double().numpy()
            if len(test_idx):
                scores[test_idx] += self.decision(values[test_idx]).double().numpy() / folds
        return scores

    def features(self, x0: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fit(self, features: torch.Tensor, is_member: torch.Tensor) -> None:
        raise NotImplementedError

    def decision(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
