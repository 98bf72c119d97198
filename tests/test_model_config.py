"""Presets, YAML files and `--set key=value` overrides."""

import contextlib
import io
import re

import pytest
from conftest import random_interactions

from gsau.config import Config, preset_names, resolve
from gsau.errors import ConfigError

# The paper's table of models (arXiv 2412.04276) as the presets should encode it.
TABLE = {
    #               graph       sequence    graph_loss  seq_loss gamma  scorer      mask   init
    "gsau":          ("lightgcn", "sasrec",   "au",       "au",   0.1,  "sequence", False, "xavier_normal"),
    "gsau-rec":      ("lightgcn", "sasrec",   "au",       "ce",   0.1,  "sequence", False, "xavier_normal"),
    "gsau-bert4rec": ("lightgcn", "bert4rec", "au",       "au",   0.1,  "sequence", False, "xavier_normal"),
    "sasrec-u":      (None,       "sasrec",   None,       "au",   0.05, "sequence", False, "xavier_normal"),
    "bert4rec-u":    (None,       "bert4rec", None,       "au",   0.05, "sequence", False, "xavier_normal"),
    "directau":      ("lightgcn", None,       "au",       None,   0.5,  "graph",    True,  "xavier_normal"),
    "graphau":       ("lightgcn", None,       "layer_au", None,   0.5,  "graph",    True,  "xavier_normal"),
    "lightgcn":      ("lightgcn", None,       "bpr",      None,   None, "graph",    True,  "encoder_default"),
    "sasrec":        (None,       "sasrec",   None,       "ce",   None, "sequence", False, "encoder_default"),
    "bert4rec":      (None,       "bert4rec", None,       "ce",   None, "sequence", False, "encoder_default"),
    "gsau-batch":      ("lightgcn", "sasrec",   "au",       "au",   1.0,  "sequence", False, "xavier_normal"),
    "gsau-items":      ("lightgcn", "sasrec",   "au",       "au",   0.2,  "sequence", False, "xavier_normal"),
}


def test_preset_names_are_the_models_in_table_order():
    assert preset_names() == list(TABLE)


@pytest.mark.parametrize("name", list(TABLE))
def test_preset_has_the_tables_settings(name):
    cfg = resolve(name)
    n = cfg.net
    graph, seq, graph_loss, seq_loss, gamma, scorer, mask, init = TABLE[name]
    assert cfg.preset == name
    assert (n.graph_encoder, n.sequence_encoder, n.graph_loss, n.sequence_loss) == (graph, seq, graph_loss, seq_loss)
    if gamma is not None:
        assert n.gamma == pytest.approx(gamma)
    assert n.scorer == scorer
    assert n.mask_history is mask
    assert n.init == init
    if seq is not None:  # sequential uniformity for every sequential model but the CE baselines
        assert n.sequence_uniformity is (name not in ("sasrec", "bert4rec"))


def test_graph_only_presets_mask_history_and_sequential_ones_do_not():
    for name in preset_names():
        n = resolve(name).net
        assert n.mask_history is (n.sequence_encoder is None), name


def test_gsau_rec_normalises_its_cross_entropy_and_sasrec_does_not():
    assert resolve("gsau-rec").net.ce_normalize is True
    assert resolve("sasrec").net.ce_normalize is False


def test_lightgcn_bpr_regularisation():
    assert resolve("lightgcn").net.bpr_reg == pytest.approx(1e-5)


# -- overrides -------------------------------------------------------------------------------

def test_flat_override_applies_and_leaves_the_rest_of_the_preset():
    base = resolve("gsau")
    cfg = resolve("gsau", None, ["gamma=0.2"])
    assert cfg.net.gamma == pytest.approx(0.2)
    base.net.gamma = 0.2
    assert cfg == base


def test_sectioned_and_typed_overrides():
    cfg = resolve("sasrec", None, ["net.embedding_dim=32", "train.lr=0.01", "batch_size=64", "ks=[5, 10]",
                                   "metric=recall@10", "mask_history=true", "data.dedup=yes", "hidden_dropout=0.25"])
    assert cfg.net.embedding_dim == 32 and isinstance(cfg.net.embedding_dim, int)
    assert cfg.train.lr == pytest.approx(0.01) and isinstance(cfg.train.lr, float)
    assert cfg.train.batch_size == 64
    assert cfg.train.ks == [5, 10]
    assert cfg.train.metric == "recall@10"
    assert cfg.net.mask_history is True
    assert cfg.data.dedup is True
    assert cfg.net.hidden_dropout == pytest.approx(0.25)


def test_scientific_notation_and_int_valued_floats():
    cfg = resolve("gsau", None, ["lr=1e-3", "gamma=1", "epochs=20.0"])
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.net.gamma == 1.0 and isinstance(cfg.net.gamma, float)
    assert cfg.train.epochs == 20 and isinstance(cfg.train.epochs, int)


def test_null_override_removes_an_encoder():
    cfg = resolve("gsau", None, ["graph_encoder=null", "graph_loss=null"])
    assert cfg.net.graph_encoder is None and cfg.net.graph_loss is None


def test_later_overrides_win_and_direct_values_win_over_overrides():
    cfg = resolve("gsau", None, ["gamma=0.2", "gamma=0.3", "epochs=7"], epochs=9)
    assert cfg.net.gamma == pytest.approx(0.3)
    assert cfg.train.epochs == 9


def test_yaml_file_applies_between_preset_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("net:\n  gamma: 0.7\n  embedding_dim: 16\ntrain: {lr: 0.02}\nbatch_size: 128\n")
    cfg = resolve("gsau", str(f), ["gamma=0.9"])
    assert cfg.net.gamma == pytest.approx(0.9)
    assert cfg.net.embedding_dim == 16
    assert cfg.train.lr == pytest.approx(0.02)
    assert cfg.train.batch_size == 128


@pytest.mark.parametrize("text", ["- a\n- b\n", "net: {nope: 1}\n", "net: {gamma: [1, 2]}\n", "{{{"])
def test_bad_yaml_file_raises_config_error(tmp_path, text):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError):
        resolve("gsau", str(f))


def test_missing_yaml_file_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        resolve("gsau", str(tmp_path / "absent.yaml"))


@pytest.mark.parametrize("override, match", [
    ("gama=0.2", "unknown option"),
    ("net.nope=1", "unknown option"),
    ("nosection.gamma=1", "unknown option"),
    ("train.gamma=0.2", "unknown option"),  # a real key in the wrong section
    ("gamma=abc", "gamma"),
    ("gamma=", "gamma"),
    ("batch_size=1.5", "batch_size"),
    ("batch_size=true", "batch_size"),
    ("epochs=ten", "epochs"),
    ("mask_history=maybe", "mask_history"),
    ("ks=[5, x]", "ks"),
    ("scorer=null", "scorer"),
    ("scorer=bogus", "scorer"),
    ("sequence_encoder=gru", "sequence_encoder"),
    ("graph_loss=hinge", "graph_loss"),
    ("init=kaiming", "init"),
    ("graph_encoder=null", "go together"),
    ("metric=ndcg@7", "metric"),
    ("metric=auc@20", "metric"),
    ("batch_size=1", "batch_size"),
    ("hidden_dropout=1.0", "dropout"),
    ("mask_ratio=0", "mask_ratio"),
    ("max_len=1", "max_len"),
    ("seq_batching=ragged", "seq_batching"),
    ("gamma", "key=value"),
])
def test_bad_override_raises_config_error(override, match):
    with pytest.raises(ConfigError, match=match):
        resolve("gsau", None, [override])


def test_sequence_scorer_without_sequence_encoder_is_refused():
    with pytest.raises(ConfigError, match="scorer"):
        resolve("directau", None, ["scorer=sequence"])
    with pytest.raises(ConfigError, match="scorer"):
        resolve("sasrec", None, ["scorer=graph"])


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ConfigError) as e:
        resolve("gsau2")
    assert "gsau2" in str(e.value) and "directau" in str(e.value)


@pytest.mark.parametrize("name", list(TABLE))
def test_config_round_trips_through_its_dict(name):
    cfg = resolve(name, None, ["gamma=0.3", "ks=[10, 20]", "dataset=/some/dir"])
    again = Config.from_dict(cfg.to_dict())
    assert again == cfg
    again.validate()


def test_unknown_option_hint_names_a_working_command():
    """The error's advice (a `gsau ...` command in backquotes) runs and lists the options."""
    from gsau.cli import main
    with pytest.raises(ConfigError) as e:
        resolve("gsau", None, ["gama=0.2"])
    hints = re.findall(r"`(gsau [^`]*)`", str(e.value))
    for hint in hints:
        argv = hint.replace("MODEL", "gsau").split()[1:]
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            try:
                rc = main(argv)
            except SystemExit as exit_:
                rc = exit_.code
        assert rc in (0, None), hint
        assert "gamma" in out.getvalue(), hint


# -- values that would crash training are refused up front, as config errors -------------------------

CANNOT_TRAIN = [
    ("gsau", "n_heads=3"),  # ValueError in TransformerLayer: 64 is not a multiple of 3 heads
    ("graphau", "graph_layers=0"),  # ZeroDivisionError in Recommender.graph_terms (layer_au)
    ("gsau", "embedding_dim=0"),  # ZeroDivisionError in nn.init.xavier_normal_
    ("gsau", "lr=-0.001"),  # ValueError from torch.optim.Adam
    ("gsau", "weight_decay=-1"),  # ValueError from torch.optim.Adam
    ("gsau", "eval_batch_size=0"),  # ValueError: range() arg 3 must not be zero (evaluation)
    ("gsau", "threads=-1"),  # RuntimeError from torch.set_num_threads
]


@pytest.mark.parametrize("preset, override", CANNOT_TRAIN)
def test_values_that_cannot_train_are_config_errors(preset, override):
    try:
        resolve(preset, None, [override])
    except ConfigError:
        return
    raise AssertionError(f"{override} accepted for {preset}")


def test_cli_train_with_incompatible_heads_is_a_clear_error(tmp_path, capsys, dataset_dir):
    from gsau.cli import main
    data = dataset_dir(random_interactions(0, 3, 4, 5))
    rc = main(["train", "--model", "gsau", "--dataset", str(data), "--out", str(tmp_path / "run"),
               "--epochs", "1", "--quiet", "--set", "n_heads=3"])
    assert rc == 2
    assert "head" in capsys.readouterr().err


def test_only_the_research_presets_rank_by_cosine_and_they_stay_out_of_the_paper_grid():
    from gsau.reproduce import paper_models
    research = ["gsau-batch", "gsau-items"]
    assert [n for n in preset_names() if resolve(n).net.cosine_scores] == research
    assert [n for n in preset_names() if resolve(n).net.su_negatives == "batch"] == ["gsau-batch"]
    assert set(paper_models()) == set(preset_names()) - set(research)
    # gsau-items is the study's cell gsau-items-t5 (results/study/study.yaml): gsau with these options.
    sets = ["cosine_scores=true", "su_negatives=items", "gamma=0.2", "su_t=5"]
    assert resolve("gsau-items").net == resolve("gsau", None, sets).net
    assert resolve("gsau-items").net.su_t * resolve("gsau-items").net.gamma == pytest.approx(1.0)  # balanced
