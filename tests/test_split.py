import json

import numpy as np
import pytest
from PIL import Image

from lab.data import MembershipDataModule, MembershipSplit, draw_split
from lab.errors import LabError
from tests.conftest import write_image_folder

POOL = [f"x:{i}" for i in range(100)]


def test_draw_is_disjoint_halved_and_seeded():
    ids, roles, splits = draw_split(POOL, POOL, 30, 20, seed=3)
    members = {i for i, r in zip(ids, roles) if r == "member"}
    nonmembers = {i for i, r in zip(ids, roles) if r == "nonmember"}
    assert len(members) == 30 and len(nonmembers) == 20 and not members & nonmembers
    assert sum(1 for r, s in zip(roles, splits) if r == "member" and s == "validation") == 15
    assert sum(1 for r, s in zip(roles, splits) if r == "nonmember" and s == "test") == 10
    assert draw_split(POOL, POOL, 30, 20, seed=3) == (ids, roles, splits)
    assert draw_split(POOL, POOL, 30, 20, seed=4)[0] != ids


def test_draw_from_two_sources():
    other = [f"y:{i}" for i in range(10)]
    ids, roles, _ = draw_split(POOL, other, 5, 10, seed=0)
    assert all(i.startswith("x:") for i, r in zip(ids, roles) if r == "member")
    assert sorted(i for i, r in zip(ids, roles) if r == "nonmember") == sorted(other)
    with pytest.raises(LabError, match="non-member source has only 10"):
        draw_split(POOL, other, 5, 11, seed=0)


def test_more_than_the_data_is_an_error():
    with pytest.raises(LabError, match="asked for 60 members \\+ 41 non-members but the source has only 100"):
        draw_split(POOL, POOL, 60, 41, seed=0)


def test_split_file_round_trip(tmp_path):
    dm = MembershipDataModule(members=10, nonmembers=6, image_size=16, seed=1)
    dm.split.save(tmp_path / "split.json")
    assert [p.name for p in tmp_path.iterdir()] == ["split.json"]  # no temp file left
    loaded = MembershipSplit.load(tmp_path / "split.json")
    assert loaded == dm.split
    again = MembershipDataModule.from_split_file(tmp_path / "split.json")
    assert again.split.ids == dm.split.ids and np.array_equal(again.images.numpy(), dm.images.numpy())
    assert again.image_shape == (1, 16, 16)


def test_overlapping_roles_are_refused(tmp_path):
    dm = MembershipDataModule(members=4, nonmembers=4, image_size=8)
    d = dm.split.to_json()
    d["rows"][-1]["id"] = d["rows"][0]["id"]  # a non-member that is also a member
    (tmp_path / "split.json").write_text(json.dumps(d))
    with pytest.raises(LabError, match="both member and nonmember"):
        MembershipSplit.load(tmp_path / "split.json")


def test_missing_or_invalid_split_file(tmp_path):
    with pytest.raises(LabError, match="split file not found"):
        MembershipSplit.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(LabError, match="not a valid membership split"):
        MembershipSplit.load(tmp_path / "bad.json")


def test_changed_data_fails_the_hash(tmp_path):
    folder = write_image_folder(tmp_path / "imgs", n=8)
    dm = MembershipDataModule(source="folder", root=str(folder), members=3, nonmembers=3, image_size=8, channels=3)
    dm.split.save(tmp_path / "split.json")
    member = dm.split.ids[dm.split.select("member")[0]].removeprefix("folder:imgs/")
    img = np.asarray(Image.open(folder / member)).copy()
    img[0, 0] ^= 1
    Image.fromarray(img).save(folder / member)
    with pytest.raises(LabError, match="no longer matches the split file"):
        MembershipDataModule.from_split_file(tmp_path / "split.json")


def test_dataset_shift_draws_nonmembers_from_another_source():
    dm = MembershipDataModule(members=8, nonmembers=8, nonmember_source="digits", image_size=16)
    roles = dict(zip(dm.split.ids, dm.split.roles))
    assert all(i.startswith("mnist:") for i, r in roles.items() if r == "member")
    assert all(i.startswith("digits:") for i, r in roles.items() if r == "nonmember")
    assert dm.split.sources["nonmember"]["name"] == "digits"
    assert len(dm.dataset(role="member")) == 8
    x, row = dm.dataset(role="nonmember", eval_split="test")[0]
    assert x.shape == (1, 16, 16) and dm.split.roles[row] == "nonmember"


def test_atomic_writes_get_a_plain_files_permissions_and_leave_nothing_behind_on_failure(tmp_path):
    import os
    import stat

    from lab.data.split import write_atomic

    umask = os.umask(0o022)
    os.umask(umask)
    write_atomic(tmp_path / "sub" / "index.html", b"<html></html>")
    assert (tmp_path / "sub" / "index.html").read_bytes() == b"<html></html>"
    assert stat.S_IMODE((tmp_path / "sub" / "index.html").stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "sub" / "table.md", "text, not bytes")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["index.html"]
