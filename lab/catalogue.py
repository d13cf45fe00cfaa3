"""The attack names, without importing the attacks (torch, Lightning): what the CLIs' `--help` and
parsers show. `lab.attacks.ATTACKS` maps the same names to classes (a test keeps them equal)."""

ATTACK_NAMES = (
    "loss", "multistep_loss", "pia", "pian", "secmi_stat", "secmi_nn", "pfami", "pfami_nn", "gsa1", "gsa2",
    "gradient_norm", "reconstruction", "graybox", "blackbox", "blind", "lira", "rmia", "sima", "clid", "clid_th", "clid_vec",
)
