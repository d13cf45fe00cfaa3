"""Scoring a target with attacks: the Lightning predict loop, each example exactly once (also under
DDP), one finite score per example, and a per-(target, attack) resume folder.

Front ends (`lab.attack`, `lab.infer`, `lab.study`) call `score_target`; it never writes outside
the `partial` folder it is given.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from lab.attacks import Attack
from lab.attacks.base import DenoiserCache
from lab.console import Progress, quiet_lightning
from lab.data import MembershipDataModule
from lab.data.split import write_json_atomic
from lab.errors import LabError
from lab.gather import ShardWriter, merge_shards
from lab.report import write_csv_atomic
from lab.targets.load import Target


def predict(
    attack: Attack, loader: DataLoader, trainer_kwargs: dict
) -> tuple[np.ndarray, torch.Tensor, float, float, float, float] | None:
    """Rows, values, denoiser calls, backward passes and reused calls per example, and examples/s of one attack.

    Under DDP (`trainer_kwargs` with a `ddp`/`ddp_spawn` strategy) every rank scores its shard and
    rank 0 gets all of them, each example once; other ranks get None.
    """
    quiet_lightning()  # one Trainer per (target, attack): no banners, from the CLIs, notebooks or lab.evaluate
    shards = tempfile.mkdtemp(prefix="lab_predict_")
    writer = ShardWriter(shards)
    trainer = pl.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        inference_mode=not attack.needs_grad,
        callbacks=[writer],
        **{
            "enable_progress_bar": sys.stderr.isatty(),
            **trainer_kwargs,
        },  # Lightning's bar on a terminal; lines (above) in a log
    )
    try:
        start = time.perf_counter()
        trainer.predict(attack, loader, return_predictions=False)
        seconds = time.perf_counter() - start
        if not trainer.is_global_zero:
            return None
        rows, values, calls, grads, reused = merge_shards(writer.directory)
    finally:
        shutil.rmtree(shards, ignore_errors=True)
        if trainer.is_global_zero:
            shutil.rmtree(writer.directory, ignore_errors=True)
    return rows, values, calls, grads, reused, len(rows) / seconds


PARTIAL_DIR = ".partial"  # <out>/.partial/: each finished (target, attack)'s scores, for a rerun after a kill


def target_state(target: Target) -> str:
    """What identifies a target's weights on disk: every file's path, size and modification time."""
    h = hashlib.sha256()
    for p in sorted(target.path.rglob("*")):
        rel = p.relative_to(target.path)
        if p.is_file() and not {"attacks", ".lab_cache"} & set(rel.parts):  # not what attacks write beside it
            st = p.stat()
            h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def score_target(
    target: Target,
    attacks: dict[str, Attack],
    batch_size: int = 64,
    trainer_kwargs: dict | None = None,
    partial: Path | None = None,
    dataset: Dataset | None = None,
    progress: Progress | None = None,
    conditions: tuple[str, ...] = ("caption",),
    compile: bool = False,
) -> pd.DataFrame:
    """The scores table of every attack on one target: one row per (attack, example).

    The examples are the target's split, read from its sources (or `dataset`: (image, split row)
    pairs already in memory). With `partial` (a folder), each finished attack's rows are kept there,
    and an attack whose rows are there for the same target files, split and settings is not run
    again (a killed run resumes). On a text-to-image target each attack runs once per condition
    ('caption': each example's caption; 'empty': the empty prompt), the second named `<attack>@empty`
    (attacks whose score ignores the condition run once); other targets ignore `conditions`."""
    if dataset is None:
        dataset = MembershipDataModule.from_split_file(target.split_path).dataset()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    name = target.path.name if target.path is not None else "in-memory"
    frames = []
    compiled = torch.compile(target.unet) if compile else None
    with shared_denoiser_calls(target, attacks):
        state = target_state(target) if partial is not None and target.path is not None else None
        for key, attack, condition in conditioned(target, attacks, check_conditions(conditions)):
            attack.bind(target, condition)
            if compiled is not None and not attack.needs_grad and attack.unet is target.unet:
                attack.unet = compiled  # the same weights (a wrapper), so shared calls and scores stay comparable
            stamp = {
                "target": state,
                "split": target.split.fingerprint(),
                "attack": key,
                "settings": json.dumps(attack.settings(), sort_keys=True, default=str),
            }
            kept = partial / f"{target.path.name}__{key.replace('/', '-')}.csv" if state is not None else None
            if kept is not None and kept.is_file() and kept.with_suffix(".json").is_file():
                try:
                    if json.loads(kept.with_suffix(".json").read_text()) == stamp:
                        frames.append(pd.read_csv(kept, float_precision="round_trip"))
                        print(
                            f"lab.attack: {key} on {target.path.name}: kept from an earlier run"
                            + (f" ({progress.step()})" if progress else ""),
                            flush=True,
                        )
                        continue
                except (ValueError, OSError, pd.errors.ParserError):
                    pass  # damaged: score again
            result = predict(attack, loader, trainer_kwargs or {})
            if result is None:  # a DDP rank other than 0: rank 0 gathers and writes
                continue
            rows, values, calls, grads, reused, speed = result
            shared = f" ({reused:g} reused from earlier attacks)" if reused else ""
            print(
                f"lab.attack: {key} on {name}: {len(rows)} examples, {calls:g} denoiser calls each{shared}, "
                f"{len(rows) / speed:.1f} s" + (f" ({progress.step()})" if progress else ""),
                flush=True,
            )
            if sorted(rows.tolist()) != list(range(len(target.split.ids))):
                raise LabError(f"{key}: the attack did not score every example exactly once")
            scores = attack.finalize(values, rows, target.split)
            if not np.isfinite(scores).all():
                bad = int((~np.isfinite(scores)).sum())
                raise LabError(
                    f"{key} gave {bad} NaN/inf scores on {target.path or name}: the target or the data is broken"
                )
            frames.append(
                pd.DataFrame(
                    {
                        "attack": key,
                        "id": [target.split.ids[r] for r in rows],
                        "role": [target.split.roles[r] for r in rows],
                        "split": [target.split.eval_splits[r] for r in rows],
                        "score": scores,
                        "target": name,
                        "epoch": target.epoch,
                        "calls_per_example": calls,
                        "grads_per_example": grads,
                        "calls_reused_per_example": reused,
                        "setup_calls": attack.setup_calls,
                        "examples_per_s": speed,
                        "settings": json.dumps(attack.settings(), sort_keys=True, default=str),
                        "split_fingerprint": target.split.fingerprint(),
                    }
                )
            )
            if target.split.captions is not None:  # text-to-image data: what each example was conditioned on
                frames[-1].insert(1, "condition", condition if target.conditional else "")
                frames[-1].insert(6, "caption", [target.split.captions[r] for r in rows])
            if kept is not None:
                write_csv_atomic(frames[-1], kept)
                write_json_atomic(kept.with_suffix(".json"), stamp)
        return pd.concat(frames, ignore_index=True) if frames else None


def check_conditions(conditions) -> tuple[str, ...]:
    """The conditions as a tuple, or a LabError: a non-empty list of 'caption' and/or 'empty', each once."""
    from lab.attacks.base import CONDITIONS

    if (
        isinstance(conditions, str)
        or not conditions
        or any(c not in CONDITIONS for c in conditions)
        or len(set(conditions)) != len(conditions)
    ):
        raise LabError(
            f"conditions (--condition) must list {' and/or '.join(CONDITIONS)}, each once; got {conditions!r}"
        )
    return tuple(conditions)


def conditioned(target: Target, attacks: dict[str, Attack], conditions: tuple[str, ...]):
    """(table name, attack, condition) for each run: each condition in turn on a text-to-image target."""
    conditions = conditions if target.conditional else ("caption",)
    for condition in conditions:
        for key, attack in attacks.items():
            if attack.uses_condition:
                yield (key if condition == "caption" else f"{key}@{condition}"), attack, condition
            elif condition == conditions[0]:  # CLiD and blind: the same score under any condition, run once
                yield key, attack, "caption"


@contextmanager
def shared_denoiser_calls(target: Target, attacks: dict[str, Attack]):
    """While several attacks run on one target, identical denoiser calls are made once (a
    `DenoiserCache` on the target); the outputs are freed afterwards. One attack alone shares nothing."""
    if len(attacks) > 1:
        target.shared["denoiser"] = DenoiserCache()
    try:
        yield
    finally:
        target.shared.pop("denoiser", None)
        for attack in attacks.values():
            attack.cache = None


def check_trainer_kwargs(kwargs: dict) -> None:
    """A LabError for `--trainer` keys that `lightning.Trainer` does not take (with the closest names)."""
    import difflib
    import inspect

    valid = [p for p in inspect.signature(pl.Trainer.__init__).parameters if p != "self"]
    for key in kwargs:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=2)
            raise LabError(
                f"--trainer: Trainer takes no {key!r}" + (f" (did you mean {' or '.join(close)}?)" if close else "")
            )
    if any(k in kwargs for k in ("logger", "callbacks", "enable_checkpointing", "inference_mode")):
        raise LabError("--trainer: logger, callbacks, enable_checkpointing and inference_mode are set by lab.attack")
