"""The membership split: the only ground truth an attack may use.

Written at fit time beside the target. Each row names an example id, its role (member /
nonmember) and its evaluation split (validation / test: thresholds and learned attacks fit
on validation, results are reported on test). The file also records where the data came
from, how it was preprocessed, the seed, and a content hash over the raw bytes of every
example it names, so that an attack can refuse data that changed since training.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lab.errors import LabError

ROLES = ("member", "nonmember")
EVAL_SPLITS = ("validation", "test")
FORMAT_VERSION = 1


@dataclass
class MembershipSplit:
    """Rows of (id, role, eval split) plus the provenance needed to rebuild and check the data."""

    ids: list[str]
    roles: list[str]
    eval_splits: list[str]
    seed: int
    sources: dict[str, dict] = field(default_factory=dict)  # role -> {"name": ..., "root": ...}
    preprocess: dict = field(default_factory=dict)  # {"image_size": ..., "channels": ...}
    content_hash: str = ""
    captions: list[str] | None = None  # one per row for text-to-image data (part of the content hash)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not (len(self.ids) == len(self.roles) == len(self.eval_splits)):
            raise LabError("split file is inconsistent: ids, roles and eval splits differ in length")
        if bad := sorted(set(self.roles) - set(ROLES)):
            raise LabError(f"split file has unknown roles {bad}; valid roles: {', '.join(ROLES)}")
        if bad := sorted(set(self.eval_splits) - set(EVAL_SPLITS)):
            raise LabError(f"split file has unknown eval splits {bad}; valid: {', '.join(EVAL_SPLITS)}")
        if len(set(self.ids)) != len(self.ids):
            members = {i for i, r in zip(self.ids, self.roles) if r == "member"}
            nonmembers = {i for i, r in zip(self.ids, self.roles) if r == "nonmember"}
            if both := members & nonmembers:
                raise LabError(
                    f"split file has {len(both)} ids that are both member and nonmember, e.g. {sorted(both)[0]}"
                )
            raise LabError("split file lists an id more than once")
        if not self.ids:
            raise LabError("split file names no examples")
        if any(not isinstance(i, str) for i in self.ids):
            raise LabError("split file has ids that are not strings")
        if self.captions is not None and (
            len(self.captions) != len(self.ids) or any(not isinstance(c, str) for c in self.captions)
        ):
            raise LabError("split file's captions must be one string per row (or absent from every row)")
        if self.preprocess or self.sources:  # a split read from disk or drawn by the data module
            size, channels = self.preprocess.get("image_size"), self.preprocess.get("channels")
            if (
                not isinstance(size, int)
                or isinstance(size, bool)
                or size < 1
                or channels not in (1, 3)
                or isinstance(channels, bool)
            ):
                raise LabError(
                    "split file's preprocess needs image_size (a positive integer) and channels (1 or 3), "
                    f"got {self.preprocess!r}"
                )
            if not isinstance(self.preprocess.get("captions", ""), str):
                raise LabError(
                    "split file's preprocess 'captions' must name a caption column, "
                    f"got {self.preprocess['captions']!r}"
                )
            for role in ROLES:
                src = self.sources.get(role)
                if (
                    not isinstance(src, dict)
                    or not isinstance(src.get("name"), str)
                    or not isinstance(src.get("root"), (str, type(None)))
                ):
                    raise LabError(
                        f"split file's sources need a {role!r} entry with a 'name' and a 'root' (string or null), "
                        f"got {src!r}"
                    )

    def select(self, role: str | None = None, eval_split: str | None = None) -> list[int]:
        """Row indices with the given role and/or eval split."""
        return [
            i
            for i, (r, s) in enumerate(zip(self.roles, self.eval_splits))
            if (role is None or r == role) and (eval_split is None or s == eval_split)
        ]

    def counts(self) -> dict[str, int]:
        return {f"{r}/{s}": len(self.select(r, s)) for r in ROLES for s in EVAL_SPLITS}

    def to_json(self) -> dict:
        d = asdict(self)
        rows = [{"id": i, "role": r, "split": s} for i, r, s in zip(self.ids, self.roles, self.eval_splits)]
        if self.captions is not None:
            for row, caption in zip(rows, self.captions):
                row["caption"] = caption
        for k in ("ids", "roles", "eval_splits", "captions"):
            del d[k]
        return {"format": "lab.membership_split", "version": FORMAT_VERSION, **d, "rows": rows}

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (a temp file renamed into place): never a half-written split."""
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MembershipSplit":
        path = Path(path)
        if not path.is_file():
            raise LabError(f"split file not found: {path}")
        try:
            d = json.loads(path.read_text())
            if d.get("format") != "lab.membership_split":
                raise ValueError("not a lab membership split")
            rows = d["rows"]
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise ValueError("'rows' must be a list of objects")
            if (
                not isinstance(d["sources"], dict)
                or not isinstance(d["preprocess"], dict)
                or not isinstance(d["content_hash"], str)
            ):
                raise ValueError("'sources' and 'preprocess' must be objects and 'content_hash' a string")
            if not d["sources"] or not d["preprocess"]:
                raise ValueError(
                    "'sources' and 'preprocess' must say where the data comes from and how it is prepared"
                )
            captioned = sum("caption" in r for r in rows)
            if captioned not in (0, len(rows)):
                raise ValueError(
                    f"{len(rows) - captioned} of {len(rows)} rows have no caption (captions are all or none)"
                )
            return cls(
                ids=[r["id"] for r in rows],
                roles=[r["role"] for r in rows],
                eval_splits=[r["split"] for r in rows],
                seed=int(d["seed"]),
                sources=d["sources"],
                preprocess=d["preprocess"],
                content_hash=d["content_hash"],
                captions=[r["caption"] for r in rows] if captioned else None,
            )
        except LabError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise LabError(f"split file {path} is not a valid membership split: {e}") from None

    def fingerprint(self) -> str:
        """SHA-256 of the whole ground truth: ids, roles, evaluation splits, preprocessing and the
        content hash (the pixels). Recorded in each export's target.json at fit time, so a split
        whose roles or evaluation splits were edited afterwards is refused."""
        truth = {
            "ids": self.ids,
            "roles": self.roles,
            "eval_splits": self.eval_splits,
            "preprocess": self.preprocess,
            "content_hash": self.content_hash,
        }
        if self.captions is not None:  # (absent for uncaptioned data, so older fingerprints still hold)
            truth["captions"] = self.captions
        return hashlib.sha256(json.dumps(truth, sort_keys=True).encode()).hexdigest()

    def check_hash(self, content_hash: str) -> None:
        if content_hash != self.content_hash:
            raise LabError(
                "the data no longer matches the split file "
                f"(content hash {content_hash[:12]} != {self.content_hash[:12]}): "
                "the source files changed since the target was trained"
            )


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file renamed into place: never a half-written file.
    The temporary file is created with mode 0666 less the umask, as a plain write would be (not
    mkstemp's 0600), so a report shared on a group-readable folder stays readable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj: dict) -> None:
    write_atomic(path, json.dumps(obj, indent=1).encode())


def content_hash(ids: list[str], images: list[np.ndarray], captions: list[str] | None = None) -> str:
    """SHA-256 over (id, shape, raw bytes[, caption]) of each example, in split order."""
    h = hashlib.sha256()
    for n, (i, arr) in enumerate(zip(ids, images)):
        h.update(i.encode())
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
        if captions is not None:
            text = captions[n].encode()
            h.update(f"caption:{len(text)}:".encode() + text)
    return h.hexdigest()


def draw_split(
    member_pool: list[str],
    nonmember_pool: list[str],
    members: int,
    nonmembers: int,
    seed: int,
    validation_fraction: float = 0.5,
) -> tuple[list[str], list[str], list[str]]:
    """Draw disjoint members and non-members with a seed; halve each side into validation/test.

    When both pools are the same source (`member_pool is nonmember_pool` or equal lists), one
    permutation is cut into members then non-members, so the two can never overlap.
    Returns (ids, roles, eval_splits).
    """
    if members < 1 or nonmembers < 1:
        raise LabError(f"need at least one member and one non-member, got members={members}, nonmembers={nonmembers}")
    if not 0.0 < validation_fraction < 1.0:
        raise LabError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    rng = np.random.default_rng(seed)
    same = member_pool is nonmember_pool or member_pool == nonmember_pool
    if same:
        if members + nonmembers > len(member_pool):
            raise LabError(
                f"asked for {members} members + {nonmembers} non-members "
                f"but the source has only {len(member_pool)} examples"
            )
        order = rng.permutation(len(member_pool))
        member_ids = [member_pool[i] for i in order[:members]]
        nonmember_ids = [member_pool[i] for i in order[members : members + nonmembers]]
    else:
        if members > len(member_pool):
            raise LabError(f"asked for {members} members but the member source has only {len(member_pool)} examples")
        if nonmembers > len(nonmember_pool):
            raise LabError(
                f"asked for {nonmembers} non-members but the non-member source has only {len(nonmember_pool)} examples"
            )
        member_ids = [member_pool[i] for i in rng.permutation(len(member_pool))[:members]]
        nonmember_ids = [nonmember_pool[i] for i in rng.permutation(len(nonmember_pool))[:nonmembers]]
    ids, roles, splits = [], [], []
    for role, side in (("member", member_ids), ("nonmember", nonmember_ids)):
        n_val = int(round(len(side) * validation_fraction))
        ids += side
        roles += [role] * len(side)
        splits += ["validation"] * n_val + ["test"] * (len(side) - n_val)
    return ids, roles, splits
