"""Defenses without Ray: config validation and composition, which attacks SecAgg+ leaves
something to observe, the empirical-epsilon audit, DP-SGD's weight decay, and Flower's
robust aggregators on uploads that include a scaled ascent step."""

import math

import numpy as np
import pytest
import torch

from fl_sim import catalog
from fl_sim.config import load_config
from fl_sim.errors import ConfigError


@pytest.mark.parametrize("overrides, fragment", [
    (["defense.name=central_dp_server", "defense.noise_multiplier=-1"], "noise_multiplier"),
    (["defense.name=central_dp_server", "defense.clipping_norm=0"], "clipping_norm"),
    (["defense.name=dp_sgd", "defense.max_grad_norm=0"], "max_grad_norm"),
    (["defense.name=local_dp", "defense.epsilon=0"], "epsilon"),
    (["defense.name=local_dp", "defense.delta=1"], "delta"),
    (["defense.name=secagg+robust"], "do not compose"),
    (["defense.name=secagg+central_dp_server"], "do not compose"),
    (["defense.name=none+dp_sgd"], "without none"),
    (["defense.name=central_dp_client", "defense.noise_multiplier=0"], "noise_multiplier"),
    (["defense.name=robust", "defense.byzantine=2"], "byzantine"),
    (["defense.name=secagg", "federation.participants=2", "attack.target_participant=0"], "3 participants"),
    (["defense.name=dp_sgd", "defense.clipping=adaptive"], "defense.clipping"),
    (["defense.name=central_dp_server", "defense.clipping=adaptive", "defense.noise_multiplier=0.4",
      "defense.clipped_count_stddev=0.2"], "clipped_count_stddev"),
    (["defense.name=central_dp_server", "defense.clipping=adaptive", "defense.target_clipped_quantile=2"],
     "target_clipped_quantile"),
])
def test_bad_defense_parameters_are_config_errors(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_compositions_that_make_sense_are_accepted():
    for name in ("secagg+local_dp", "local_dp+secagg", "dp_sgd+secagg+local_dp", "robust+local_dp",
                 "central_dp_server+dp_sgd"):
        assert sorted(load_config(None, [f"defense.name={name}"]).defense.parts()) == sorted(name.split("+"))


@pytest.mark.parametrize("side", ["server", "client"])
def test_adaptive_clipping_selects_flowers_adaptive_wrapper_and_mod(side):
    from flwr.serverapp.strategy import FedAvg

    from fl_sim import defense

    cfg = load_config(None, [f"defense.name=central_dp_{side}", "defense.clipping=adaptive",
                             "defense.noise_multiplier=0.3", "defense.clipping_norm=2",
                             "defense.target_clipped_quantile=0.7", "defense.clip_norm_lr=0.1"])
    wrapped = defense.server_wrapped(cfg, FedAvg())
    assert type(wrapped).__name__ == f"DifferentialPrivacy{side.title()}SideAdaptiveClipping"
    assert (wrapped.clipping_norm, wrapped.target_clipped_quantile, wrapped.clip_norm_lr) == (2, 0.7, 0.1)
    assert defense.client_mods(cfg) == (["adaptive_clip"] if side == "client" else [])
    fixed = defense.server_wrapped(load_config(None, [f"defense.name=central_dp_{side}"]), FedAvg())
    assert type(fixed).__name__ == f"DifferentialPrivacy{side.title()}SideFixedClipping"
    assert "caveat" in defense.accountant(cfg, None, 3)["central_dp"]


def test_under_secagg_attacks_on_individual_uploads_are_not_observable():
    secagg = "secagg+local_dp"
    for name in ("global_isolating", "global_isolating_gradient_ascent", "global_calibrated",
                 "global_compact_references"):
        why = catalog.get(name).not_observable(secagg)
        assert why is not None and why.startswith("not observable under secagg"), name
        assert catalog.get(name).not_observable("local_dp") is None
    # what reads one model per round runs on the aggregates, which a passive aggregator holds too
    for name in ("global_passive", "global_compact", "global_loss_threshold", "global_unsupervised"):
        assert catalog.get(name).not_observable(secagg) is None, name
        assert catalog.get(name).observed_role(secagg) == "global"
        assert catalog.get(name).observed_role("local_dp") == "upload"
    for name in ("local_passive", "local_gradient_ascent", "local_gradient_ascent_boosted"):
        assert catalog.get(name).not_observable(secagg) is None
    ascent = catalog.get("global_gradient_ascent")
    assert ascent.not_observable(secagg) is None and ascent.observed_role(secagg) == "global"
    assert ascent.observed_role("none") == "upload"
    assert catalog.TRAININGS["global_isolating"].not_runnable("secagg") is not None
    assert catalog.TRAININGS["global_gradient_ascent"].not_runnable("secagg") is None


# ------------------------------------------------------------------ empirical epsilon

def test_clopper_pearson_bounds_match_the_closed_forms():
    from attacks.audit import cp_lower, cp_upper

    # k = 0: upper = 1 - alpha^(1/n); k = n: lower = alpha^(1/n)
    assert float(cp_upper(0, 20, 0.025)) == pytest.approx(1 - 0.025 ** (1 / 20))
    assert float(cp_lower(20, 20, 0.025)) == pytest.approx(0.025 ** (1 / 20))
    assert float(cp_lower(0, 20, 0.025)) == 0.0 and float(cp_upper(20, 20, 0.025)) == 1.0
    lo, hi = float(cp_lower(30, 100, 0.025)), float(cp_upper(30, 100, 0.025))
    assert lo < 0.30 < hi and hi - lo < 0.2


def _randomized_response(eps: float, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """An exactly eps-DP mechanism on one bit (member / not): its output is the score."""
    labels = np.r_[np.ones(n), np.zeros(n)].astype(int)
    keep = rng.random(2 * n) < math.exp(eps) / (1 + math.exp(eps))
    return np.where(keep, labels, 1 - labels).astype(float), labels


def test_empirical_epsilon_stays_below_the_true_epsilon_and_finds_much_of_it():
    from attacks.audit import empirical_epsilon

    rng = np.random.default_rng(0)
    eps, bounds = 2.0, []
    for _ in range(40):
        ks, kl = _randomized_response(eps, 2000, rng)
        es, el = _randomized_response(eps, 2000, rng)
        bounds.append(empirical_epsilon(ks, kl, es, el, delta=1e-5)["epsilon_lb"])
    bounds = np.array(bounds)
    assert (bounds > eps).mean() <= 0.05       # a 95 % lower bound
    assert np.median(bounds) > 0.8 * eps       # and not a vacuous one: most of eps is found


def test_empirical_epsilon_of_a_blind_attack_is_zero_and_thresholds_come_from_known_records():
    from attacks.audit import empirical_epsilon

    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(300), np.zeros(300)].astype(int)
    blind = empirical_epsilon(rng.normal(size=600), labels, rng.normal(size=600), labels, delta=1e-5)
    assert blind["epsilon_lb"] == 0.0
    # known records where high scores mean members, evaluation where they mean the opposite:
    # a test chosen on the evaluation records would find a large bound, this one finds none
    known = np.r_[rng.normal(3, 1, 300), rng.normal(0, 1, 300)]
    flipped = np.r_[rng.normal(0, 1, 300), rng.normal(3, 1, 300)]
    assert empirical_epsilon(known, labels, flipped, labels, delta=1e-5)["epsilon_lb"] == 0.0
    assert empirical_epsilon(known, labels, known, labels, delta=1e-5)["epsilon_lb"] > 1.0


def test_bonferroni_combination_reports_the_largest_bound_at_the_joint_confidence():
    from attacks.audit import combine

    per = {"0": {"epsilon_lb": 0.5, "confidence": 1 - 0.05 / 2}, "1": {"epsilon_lb": 1.5, "confidence": 1 - 0.05 / 2}}
    out = combine(per)
    assert out["epsilon_lb"] == 1.5 and out["from"] == "1" and out["confidence"] == pytest.approx(0.95)


# ------------------------------------------------------------------ DP-SGD keeps weight decay

def test_dp_sgd_applies_weight_decay(tmp_path):
    from clients.common import local_train
    from fl_sim.models import build_model, get_arrays
    from fl_sim.plan import ClientPlan

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = rng.integers(0, 3, 64).astype(np.int64)
    norms = {}
    for wd in (0.0, 0.5):
        plan = ClientPlan(store_dir=str(tmp_path / f"wd{wd}"), x_path="", y_path="", input_shape=[8],
                          num_classes=3, model_name="fc", model_options={"widths": [8]}, train=[[0]],
                          local_epochs=2, batch_size=8, lr=0.1, momentum=0.0, weight_decay=wd, seed=0,
                          threads=1, dp={"noise_multiplier": 1.0, "max_grad_norm": 1.0})
        (tmp_path / f"wd{wd}").mkdir()
        torch.manual_seed(0)
        model = build_model("fc", (8,), 3, widths=[8])
        local_train(plan, 0, 1, model, x, y)
        norms[wd] = sum(float(np.sum(v.astype(np.float64) ** 2)) for v in get_arrays(model).values())
    # same data, seed and noise: only the decay differs, and it shrinks the weights
    assert norms[0.5] < 0.9 * norms[0.0]


# ------------------------------------------------------------------ robust aggregation (Flower's own)

def _replies(uploads: list[dict]):
    """Train replies as Flower's grid hands them to a strategy (built from their metadata:
    outside a run, Flower has no run id to stamp on a new Message)."""
    import time

    from flwr.app import Metadata, MetricRecord, RecordDict
    from flwr.app.message import make_message
    from flwr.app.message_type import MessageType

    from fl_sim.records import arrays_to_record

    out = []
    for pid, up in enumerate(uploads):
        content = RecordDict({"arrays": arrays_to_record(up),
                              "metrics": MetricRecord({"num-examples": 30, "partition-id": pid})})
        meta = Metadata(run_id=1, message_id=f"m{pid}", src_node_id=pid + 1, dst_node_id=0,
                        reply_to_message_id=f"q{pid}", group_id="1", created_at=time.time(), ttl=60.0,
                        message_type=MessageType.TRAIN)
        out.append(make_message(meta, content))
    return out


@pytest.mark.parametrize("aggregator", ["krum", "trimmed_mean", "median"])
def test_robust_aggregators_keep_a_scaled_ascent_step_out(aggregator):
    from fl_sim.defense import inner_strategy
    from fl_sim.federation import quiet_flwr
    from fl_sim.records import record_to_arrays

    rng = np.random.default_rng(0)
    base = {"w": rng.normal(size=(16, 8)).astype(np.float32), "b": rng.normal(size=8).astype(np.float32)}
    honest = [{k: v + 0.01 * rng.normal(size=v.shape).astype(np.float32) for k, v in base.items()}
              for _ in range(3)]
    # the boosted local attacker: an ascent step scaled by N = 4
    attacker = {k: v + 4 * 0.5 * rng.normal(size=v.shape).astype(np.float32) for k, v in base.items()}
    cfg = load_config(None, ["defense.name=robust", f"defense.aggregator={aggregator}"])
    with quiet_flwr():
        agg, _ = inner_strategy(cfg).aggregate_train(1, _replies(honest + [attacker]))
    agg = record_to_arrays(agg)
    honest_mean = {k: np.mean([h[k] for h in honest], axis=0) for k in base}
    fedavg = {k: np.mean([h[k] for h in honest + [attacker]], axis=0) for k in base}

    def dist(a, b):
        return math.sqrt(sum(float(np.sum((a[k] - b[k]) ** 2)) for k in base))

    assert dist(agg, honest_mean) < 0.1 * dist(fedavg, honest_mean)
    if aggregator == "krum":  # Krum keeps exactly one upload, an honest one
        assert any(dist(agg, h) == 0 for h in honest)


# ------------------------------------------------------------------ compare --defenses (tables, plot)

def _seed_result(seed: int, auc: float, test_acc: float, defense: str, observable: bool = True) -> dict:
    attack = {"name": "global_passive", "defense": {"name": defense, "accountant_epsilon": None}}
    if observable:
        attack.update(accuracy=auc - 0.05, auc=auc, tpr_at_fpr={"0.001": 0.0, "0.01": 0.02, "0.1": 0.2},
                      empirical_epsilon={"epsilon_lb": 0.1 * seed})
    else:
        attack.update(not_observable="not observable under secagg: ...", skipped="...")
    local = {"name": "local_passive", "accuracy": 0.5, "auc": 0.52, "tpr_at_fpr": {"0.01": 0.0},
             "defense": {"accountant_epsilon": {"epsilon": 3.0} if defense == "dp_sgd" else None},
             "empirical_epsilon": {"epsilon_lb": 0.0}}
    return {"seed": seed, "dataset": "digits", "model": "fc", "target": {"train_acc": 1.0, "test_acc": test_acc},
            "settings": {"passive": {"train_acc": 1.0, "test_acc": test_acc}}, "attacks": [attack, local]}


def test_defense_matrix_table_and_privacy_utility_plot(tmp_path):
    from fl_sim.defense_compare import auc_matrix, defense_rows, defense_table, privacy_utility_plot

    per_defense = {"none": [_seed_result(s, 0.8 + 0.01 * s, 0.7, "none") for s in (0, 1)],
                   "dp_sgd:noise_multiplier=2": [_seed_result(s, 0.55, 0.5, "dp_sgd") for s in (0, 1)],
                   "secagg": [_seed_result(s, 0, 0.69, "secagg", observable=False) for s in (0, 1)]}
    rows = defense_rows(per_defense, ["global_passive", "local_passive"])
    assert len(rows) == 6
    md, csv_rows = defense_table(rows)
    line = next(ln for ln in md.splitlines() if ln.startswith("| none | global_passive"))
    assert "0.805 ± 0.007" in line and "70.0 ± 0.0" in line and "0.05 ± 0.07" in line
    assert "| secagg | global_passive | not observable under secagg: ..." in md
    assert any("| dp_sgd:noise_multiplier=2 | local_passive |" in ln and "3.00 ± 0.00" in ln for ln in md.splitlines())
    assert csv_rows[0][:3] == ["defense", "attack", "observable"] and len(csv_rows) == 7
    matrix = auc_matrix(rows)
    assert "| secagg | not observable | 0.520 |" in matrix and "| none | 0.805 | 0.520 |" in matrix
    privacy_utility_plot(rows, tmp_path / "pu.png", "test")
    assert (tmp_path / "pu.png").stat().st_size > 1000


def test_defense_settings_parse_with_parameters_and_refuse_bad_ones():
    from fl_sim.defense_compare import parse_defenses, slug

    cfg = load_config(None, ["defense.clipping_norm=2.0"])
    settings = parse_defenses(cfg, "none, dp_sgd:noise_multiplier=0.5 ,secagg+local_dp:epsilon=0.5")
    assert [label for label, _ in settings] == ["none", "dp_sgd:noise_multiplier=0.5", "secagg+local_dp:epsilon=0.5"]
    assert settings[1][1].defense.noise_multiplier == 0.5
    assert settings[2][1].defense.epsilon == 0.5 and settings[2][1].defense.clipping_norm == 2.0
    assert "/" not in slug("dp_sgd:noise_multiplier=0.5") and ":" not in slug("dp_sgd:noise_multiplier=0.5")
    for bad in ("", "none,none", "dp_sgd:noise_multiplier", "robust+secagg", "dp_sgd:nope=1"):
        with pytest.raises(ConfigError):
            parse_defenses(cfg, bad)
