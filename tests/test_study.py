import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lab import metrics
from lab.attack import make_attacks, score_target
from lab.callbacks import MembershipAUC
from lab.data import MembershipDataModule
from lab.errors import LabError
from lab.study import main
from lab.targets import PixelDDPM
from lab.targets.load import Target
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("study") / "out"
    monkeypatch_module.chdir(ROOT)
    table = main(["--config", "configs/study/tiny.yaml", "--out", str(out)])
    return out, table


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_the_study_reports_every_arm_attack_and_epoch(tiny_study):
    out, table = tiny_study
    report = out / "report"
    for name in (
        "table.csv",
        "table.md",
        "table_seeds.csv",
        "index.html",
        "auc_vs_epochs.png",
        "tpr_vs_epochs.png",
        "roc_no_shift.png",
        "roc_shift.png",
        "power.png",
    ):
        assert (report / name).is_file(), name
    written = pd.read_csv(report / "table.csv")
    assert len(written) == len(table) == 2 * 3 * 2  # arms x attacks x exports (epochs 1 and 3)
    assert set(written.arm) == {"no_shift", "shift"} and set(written.epoch) == {1, 3} and (written.seeds == 2).all()
    assert written.auc.between(0, 1).all()
    # every number in the study table comes from the arms' own metrics tables, one per seed
    runs = [pd.read_csv(out / "no_shift" / f"seed_{s}" / "attacks" / "metrics.csv") for s in (0, 1)]
    aucs = [r[(r.attack == "pia") & (r.epoch == 3)].auc.item() for r in runs]
    row = written[(written.arm == "no_shift") & (written.attack == "pia") & (written.epoch == 3)].iloc[0]
    assert row.auc == pytest.approx(np.mean(aucs)) and row.auc_seed_sd == pytest.approx(np.std(aucs, ddof=1))
    assert (row.auc_seed_min, row.auc_seed_max) == (min(aucs), max(aucs))
    seeds = pd.read_csv(report / "table_seeds.csv")
    assert len(seeds) == 2 * len(written) and set(seeds.seed) == {0, 1}
    # a new member/non-member draw per seed
    assert seeds[seeds.seed == 0].split_fingerprint.iloc[0] != seeds[seeds.seed == 1].split_fingerprint.iloc[0]


def test_the_study_page_is_self_contained_and_complete(tiny_study):
    """Parse index.html: every plot embedded as a PNG, every table row present, seeds, fingerprints, version."""
    import base64
    from html.parser import HTMLParser

    out, table = tiny_study

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.images, self.rows, self.row, self.cell, self.text = [], [], None, None, []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "img":
                self.images.append((attrs.get("alt"), attrs.get("src", "")))
            elif tag == "tr":
                self.row = []
            elif tag in ("td", "th"):
                self.cell = ""

        def handle_endtag(self, tag):
            if tag in ("td", "th") and self.row is not None:
                self.row.append(self.cell.strip())
                self.cell = None
            elif tag == "tr":
                self.rows.append(self.row)
                self.row = None

        def handle_data(self, data):
            self.text.append(data)
            if self.cell is not None:
                self.cell += data

    page = Page()
    page.feed((out / "report" / "index.html").read_text())
    names = {alt for alt, _ in page.images}
    assert {"auc_vs_epochs", "tpr_vs_epochs", "roc_no_shift", "roc_shift", "power"} <= names
    for _, src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"  # embedded, not a link
    for r in table.itertuples():
        assert [r.arm, r.attack, str(r.epoch), "2", f"{r.auc:.3f}"] in [row[:5] for row in page.rows], r
    text = "".join(page.text)
    seeds = pd.read_csv(out / "report" / "table_seeds.csv")
    for fingerprint in seeds.split_fingerprint.unique():
        assert fingerprint in text
    from lab import __version__

    assert f"lab {__version__}" in text and "seeds [0, 1]" in text
    assert "needs test non-members" in text and "denoiser calls" in text.lower() or "calls_per_example" in text


def test_the_study_fit_logs_live_membership_auc(tiny_study):
    out, _ = tiny_study
    (log_dir,) = (out / "no_shift" / "seed_0" / "lightning_logs").iterdir()
    scalars = EventAccumulator(str(log_dir)).Reload().Tags()["scalars"]
    assert {"mia/pia/auc", "mia/pia/tpr@1%fpr", "train/loss_epoch"} <= set(scalars)
    events = EventAccumulator(str(log_dir)).Reload().Scalars("mia/pia/auc")
    assert [e.step for e in events] == [1, 2, 3] and all(
        0 <= e.value <= 1 for e in events
    )  # every epoch of 3, stepped by epoch
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = EventAccumulator(str(log_dir)).Reload().SummaryMetadata("_hparams_/experiment").plugin_data.content
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {
        "mia/pia/auc",
        "mia/pia/tpr@1%fpr",
    }  # HParams shows the leakage
    assert "hp_metric" not in scalars and "lr" in {h.name for h in experiment.hparam_infos}
    attack_log = next((out / "no_shift" / "seed_0" / "attacks" / "tensorboard").iterdir())
    assert [e.step for e in EventAccumulator(str(attack_log)).Reload().Scalars("pia/auc")] == [1, 3]  # the same x-axis


def test_live_auc_is_the_attack_on_the_validation_split(tmp_path):
    """The callback's number equals lab.attack's validation AUC on the same weights."""
    dm = MembershipDataModule(members=16, nonmembers=16, image_size=16, batch_size=16)
    model = PixelDDPM(image_size=16, channels=1, block_out_channels=(8, 16), norm_num_groups=4)
    callback = MembershipAUC(attacks=["pia"], every_n_epochs=1)
    trainer = pl.Trainer(
        max_epochs=1,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(model, dm)
    assert all(p.requires_grad for p in model.unet.parameters())  # training state is left as it was
    live = float(trainer.callback_metrics["mia/pia/auc"])
    dm.split.save(tmp_path / "split.json")
    target = Target(model.unet, model.scheduler, dm.split, tmp_path / "split.json", tmp_path)
    table = score_target(target, make_attacks(["pia"]))
    val = table[table.split == "validation"]
    assert live == pytest.approx(
        metrics.summary(val.score.to_numpy(), (val.role == "member").to_numpy())["auc"], abs=1e-6
    )


def test_live_auc_refuses_learned_attacks():
    with pytest.raises(LabError, match="threshold-free attacks only; secmi_nn"):
        MembershipAUC(attacks=["pia", "secmi_nn"])


def blind_auc(tmp_path, **data) -> float:
    dm = MembershipDataModule(members=200, nonmembers=200, image_size=16, seed=3, **data)
    dm.split.save(tmp_path / "split.json")
    target = Target(None, None, dm.split, tmp_path / "split.json", tmp_path)  # blind never touches a model
    table = score_target(target, make_attacks(["blind"]))
    assert table.calls_per_example.eq(0).all()
    test = table[table.split == "test"]
    return metrics.summary(test.score.to_numpy(), (test.role == "member").to_numpy())["auc"]


def test_blind_baseline_is_chance_without_shift_and_high_with_it(tmp_path):
    same = blind_auc(tmp_path)
    shifted = blind_auc(tmp_path, nonmember_source="digits")
    assert abs(same - 0.5) < 0.12, same
    assert shifted > 0.95, shifted


def test_a_bad_study_arm_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--fit_config", "configs/study/tiny_fit.yaml", "--arms", "{a: {fitt: {}}}", "--out", str(tmp_path)])
    assert "lab.study: error: study arm 'a': unknown keys ['fitt']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            [
                "--fit_config",
                "configs/study/tiny_fit.yaml",
                "--arms",
                "{ok: {}, a: {attacks: [gsa9]}}",
                "--attacks",
                "[pia]",
                "--out",
                str(tmp_path),
            ]
        )
    assert "attacks ['gsa9'] are not among the study's attacks" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "ok").exists()  # checked before any training
    with pytest.raises(SystemExit):
        main(["--config", "configs/study/tiny.yaml", "--seeds", "[0, 0]", "--out", str(tmp_path / "seeds")])
    assert "lab.study: error: seeds must be a list of distinct integers, got [0, 0]" in capsys.readouterr().err
    assert not (tmp_path / "seeds").exists()  # not even the lock file


def test_a_rerun_of_the_study_resumes_instead_of_starting_over(tiny_study, capsys):
    """A rerun (as after a kill) resumes each arm's fit from its last.ckpt, keeps the scores already
    computed, and writes the same table."""
    out, table = tiny_study
    assert (out / "no_shift" / "seed_1" / "lightning" / "last.ckpt").is_file()  # a study's fits keep a last.ckpt
    exports = {p: p.stat().st_mtime_ns for p in (out / "no_shift").glob("seed_*/epoch_*/unet/*.safetensors")}
    assert len(exports) == 2 * 2
    capsys.readouterr()
    again = main(["--config", "configs/study/tiny.yaml", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "[no_shift/seed_1] resuming from" in printed and "kept from an earlier run" in printed
    assert {p: p.stat().st_mtime_ns for p in exports} == exports  # finished exports are not written again
    pd.testing.assert_frame_equal(again.reset_index(drop=True), table.reset_index(drop=True))
