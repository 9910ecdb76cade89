"""Defenses in real Flower simulations on Ray (tiny: digits, 4 x 30 records, 1-2 rounds):
what each defense lets the aggregator hold, checked against the snapshots it recorded."""

import json
import math

import numpy as np
import pytest

from fl_sim.experiment import run_experiment
from fl_sim.snapshots import SnapshotStore
from tests.conftest import tiny_config

pytestmark = [pytest.mark.ray, pytest.mark.timeout(1200)]

# every check below reads every participant's reply: wait for them even on a loaded machine
# (the first round includes Ray's actor start-up)
SLOW = {"federation__round_timeout_s": 900}
ONE_ROUND = {"federation__rounds": 1, "attack__epochs": [1], "attack__epochs_attack_model": 3, **SLOW}


def _flat(arrays: dict, keys=None) -> np.ndarray:
    return np.concatenate([np.asarray(arrays[k], dtype=np.float64).ravel() for k in (keys or sorted(arrays))])


def _store(run_dir, name="passive") -> SnapshotStore:
    return SnapshotStore(run_dir / "snapshots" / name)


def _initial(cfg) -> dict:
    from fl_sim.target import initial_arrays, load_data

    return initial_arrays(cfg, load_data(cfg))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The same federation without a defense: its round-1 uploads are what the participants
    would have sent (training is deterministic given the seed)."""
    out = tmp_path_factory.mktemp("base") / "run"
    results = run_experiment(tiny_config(attack__names=[], **ONE_ROUND), out, progress=False)
    assert results["failures"] == []
    return _store(out)


def test_local_dp_uploads_differ_from_the_noise_free_ones_by_noise_of_the_configured_scale(baseline, tmp_path):
    # a clipping bound no update reaches, so the difference is LocalDpMod's noise alone
    cfg = tiny_config(attack__names=[], defense__name="local_dp", defense__clipping_norm=1e6,
                      defense__sensitivity=0.01, defense__epsilon=1.0, defense__delta=1e-5, **ONE_ROUND)
    results = run_experiment(cfg, tmp_path / "run", progress=False)
    store = _store(tmp_path / "run")
    sigma = 0.01 * math.sqrt(2 * math.log(1.25 / 1e-5)) / 1.0
    diffs = np.concatenate([_flat(store.get(1, p, "upload")) - _flat(baseline.get(1, p, "upload"))
                            for p in range(4)])
    assert diffs.std() == pytest.approx(sigma, rel=0.05)
    assert abs(diffs.mean()) < 4 * sigma / math.sqrt(len(diffs))
    acct = json.loads((store.dir / "defense.json").read_text())["accountant"]["local_dp"]
    assert acct["per_round"] == 1.0 and acct["noise_std"] == pytest.approx(sigma)
    assert 0 < acct["epsilon"] < math.inf and acct["basic_composition"]["epsilon"] == 1.0
    assert results["target"]["test_acc"] >= 0


def test_secagg_strategy_never_holds_an_individual_upload(baseline, tmp_path):
    cfg = tiny_config(attack__names=["global_passive", "global_isolating", "local_passive"],
                      defense__name="secagg", **ONE_ROUND)
    results = run_experiment(cfg, tmp_path / "run", progress=False)
    store = _store(tmp_path / "run")
    assert not [e for e in store.entries() if e.role == "upload"]
    held = json.loads((store.dir / "secagg-held.json").read_text())
    # SecAgg+ hands the strategy one reply per participant, each with the same unmasked sum
    assert held == [{"round": 1, "replies": 4, "distinct_parameter_sets": 1}]
    # ... and that sum is the real one: the plain FedAvg of the uploads it never saw
    # (up to SecAgg+'s quantization: +-8 in 2^22 levels)
    assert np.max(np.abs(_flat(store.get(1, None, "global")) - _flat(baseline.get(1, None, "global")))) < 1e-4
    by = {a["name"]: a for a in results["attacks"]}
    assert by["global_isolating"]["not_observable"].startswith("not observable under secagg")
    assert "auc" not in by["global_isolating"] and "accuracy" not in by["global_isolating"]
    # the passive aggregator still holds the aggregates, and attacks them
    assert 0 <= by["global_passive"]["auc"] <= 1 and "not_observable" not in by["global_passive"]
    assert by["global_passive"]["observed"].startswith("the aggregates")
    assert by["global_passive"]["defense"]["observed"].startswith("the aggregates")
    assert not (tmp_path / "run" / "snapshots" / "global_isolating").exists()  # never trained
    assert 0 <= by["local_passive"]["auc"] <= 1   # the aggregates still reach every participant


def test_secagg_composes_with_local_dp(baseline, tmp_path):
    # each participant noises its upload (LocalDpMod inside secaggplus_mod), SecAgg+ sums them:
    # the aggregate is the plain one plus the mean of 4 independent noises, std sigma / 2
    cfg = tiny_config(attack__names=["local_passive"], defense__name="secagg+local_dp", defense__clipping_norm=1e6,
                      defense__sensitivity=0.01, defense__epsilon=1.0, defense__delta=1e-5, **ONE_ROUND)
    results = run_experiment(cfg, tmp_path / "run", progress=False)
    store = _store(tmp_path / "run")
    sigma = 0.01 * math.sqrt(2 * math.log(1.25 / 1e-5))
    noise = _flat(store.get(1, None, "global")) - _flat(baseline.get(1, None, "global"))
    assert noise.std() == pytest.approx(sigma / 2, rel=0.1)
    assert not [e for e in store.entries() if e.role == "upload"]
    local = results["attacks"][0]
    assert local["defense"]["accountant_epsilon"]["mechanism"] == "local_dp"
    assert local["defense"]["accountant_epsilon"]["per_round"] == 1.0


def test_server_side_clipping_bounds_the_updates_the_aggregator_averages(tmp_path):
    clip, z = 0.05, 0.2
    cfg = tiny_config(attack__names=["global_loss_threshold", "local_passive"], attack__epochs_attack_model=3,
                      defense__name="central_dp_server", defense__clipping_norm=clip, defense__noise_multiplier=z,
                      **SLOW)
    results = run_experiment(cfg, tmp_path / "run", progress=False)
    store = _store(tmp_path / "run")
    prev, keys, raw_norms = _initial(cfg), None, []
    for rnd in (1, 2):
        keys = sorted(prev)
        clipped = []
        for p in range(4):
            # Flower clips the update, upload - global, and adds the clipped update back
            raw = _flat(store.get(rnd, p, "upload"), keys) - _flat(prev, keys)
            got = _flat(store.get(rnd, p, "clipped"), keys) - _flat(prev, keys)
            raw_norms.append(np.linalg.norm(raw))
            assert np.linalg.norm(got) <= clip * (1 + 1e-5)
            np.testing.assert_allclose(got, raw * min(1.0, clip / np.linalg.norm(raw)), atol=1e-6)
            clipped.append(got)
        noise = _flat(store.get(rnd, None, "global"), keys) - _flat(prev, keys) - np.mean(clipped, axis=0)
        assert noise.std() == pytest.approx(z * clip / 4, rel=0.1)
        prev = store.get(rnd, None, "global")
    assert max(raw_norms) > clip   # the aggregator recorded raw uploads, larger than the bound
    by = {a["name"]: a for a in results["attacks"]}
    assert "raw uploads" in by["global_loss_threshold"]["defense"]["observed"]
    # the central DP guarantee covers what participants receive, not the aggregator's view
    assert by["global_loss_threshold"]["defense"]["accountant_epsilon"] is None
    assert by["local_passive"]["defense"]["accountant_epsilon"]["mechanism"] == "central_dp"


def test_client_side_clipping_lets_the_aggregator_see_clipped_unnoised_uploads(tmp_path):
    clip, z = 0.05, 0.2
    cfg = tiny_config(attack__names=[], defense__name="central_dp_client", defense__clipping_norm=clip,
                      defense__noise_multiplier=z, **ONE_ROUND)
    run_experiment(cfg, tmp_path / "run", progress=False)
    store, init = _store(tmp_path / "run"), _initial(cfg)
    updates = [_flat(store.get(1, p, "upload")) - _flat(init) for p in range(4)]
    norms = [np.linalg.norm(u) for u in updates]
    assert max(norms) <= clip * (1 + 1e-5) and min(norms) > 0.5 * clip   # clipped on the client
    noise = _flat(store.get(1, None, "global")) - _flat(init) - np.mean(updates, axis=0)
    assert noise.std() == pytest.approx(z * clip / 4, rel=0.1)           # noised only in the mean


def test_adaptive_client_side_clipping_moves_the_bound_the_uploads_are_clipped_to(tmp_path):
    clip, z, count_std = 0.05, 0.2, 0.2
    cfg = tiny_config(attack__names=[], defense__name="central_dp_client", defense__clipping="adaptive",
                      defense__clipping_norm=clip, defense__noise_multiplier=z,
                      defense__clipped_count_stddev=count_std, **SLOW)
    run_experiment(cfg, tmp_path / "run", progress=False)
    store, init = _store(tmp_path / "run"), _initial(cfg)
    prev, bounds, mean_update = init, [], {}
    for rnd in (1, 2):
        updates = [_flat(store.get(rnd, p, "upload")) - _flat(prev) for p in range(4)]
        norms = np.linalg.norm(updates, axis=1)
        # every update is larger than the bound here, so each arrives clipped to exactly it
        np.testing.assert_allclose(norms, norms[0], rtol=1e-4)
        bounds.append(norms[0])
        mean_update[rnd] = np.mean(updates, axis=0)
        prev = store.get(rnd, None, "global")
    assert bounds[0] == pytest.approx(clip, rel=1e-4)
    # all clipped (fraction ~1 against the 0.5 target): C <- C exp(-0.2 (fraction - 0.5)) < C
    assert bounds[1] < clip * np.exp(-0.2 * 0.2)
    # Flower splits the noise: the update's share is (z^-2 - (2 count_std)^-2)^-1/2; flwr 1.42
    # updates the bound before it noises the mean, so round 1's noise is scaled by round 2's bound
    noise = _flat(store.get(1, None, "global")) - _flat(init) - mean_update[1]
    assert noise.std() == pytest.approx((z ** -2 - (2 * count_std) ** -2) ** -0.5 * bounds[1] / 4, rel=0.1)


def test_dp_sgd_epsilon_is_finite_grows_with_rounds_and_bounds_the_empirical_one(tmp_path):
    from opacus.accountants import RDPAccountant

    cfg = tiny_config(attack__names=["global_loss_threshold", "local_passive"], attack__epochs_attack_model=3,
                      defense__name="dp_sgd", defense__noise_multiplier=1.0, defense__max_grad_norm=1.0, **SLOW)
    results = run_experiment(cfg, tmp_path / "run", progress=False)
    store = _store(tmp_path / "run")
    eps = results["settings"]["passive"]["dp_epsilon"]
    assert all(0 < e < math.inf for e in eps.values())
    for p in range(4):
        history = json.loads((store.dir / f"dp-accountant-p{p}.json").read_text())
        after = []
        for rnd in (1, 2):
            acc = RDPAccountant()
            acc.history = [tuple(h[:3]) for h in history if h[3] <= rnd]
            after.append(acc.get_epsilon(1e-5))
        assert after[0] < after[1] == pytest.approx(eps[str(p)])
    for a in results["attacks"]:
        acct = a["defense"]["accountant_epsilon"]
        assert acct["mechanism"] == "dp_sgd" and 0 <= a["empirical_epsilon"]["epsilon_lb"] <= acct["epsilon"]


def test_krum_drops_the_boosted_ascent_upload(tmp_path):
    from fl_sim.catalog import TRAININGS
    from fl_sim.federated import train_federated
    from fl_sim.target import load_data, make_run_split

    cfg = tiny_config(attack__names=[], defense__name="robust", defense__aggregator="krum",
                      attack__ascent_rounds=[1], attack__gamma=0.01, **ONE_ROUND)
    data = load_data(cfg)
    split = make_run_split(cfg, len(data.y))
    (tmp_path / "run").mkdir()
    train_federated(cfg, TRAININGS["local_gradient_ascent_boosted"], data, split, tmp_path / "run")
    store, init = _store(tmp_path / "run", "local_gradient_ascent_boosted"), _initial(cfg)
    uploads = [_flat(store.get(1, p, "upload")) for p in range(4)]
    update = [np.linalg.norm(u - _flat(init)) for u in uploads]
    assert update[3] > 2 * max(update[:3])        # the attacker (the last participant) pushed hard
    glob = _flat(store.get(1, None, "global"))
    assert any(np.array_equal(glob, u) for u in uploads[:3]) and not np.array_equal(glob, uploads[3])


def test_compare_defenses_writes_the_matrix_and_the_privacy_utility_plot(tmp_path, capsys):
    from fl_sim.cli import main

    out = tmp_path / "cmp"
    code = main(["compare", "--attacks", "global_passive,local_passive", "--defenses", "none,secagg", "--seeds", "1",
                 "--set", "data.records_per_participant=30", "--set", "model.options={widths: [16]}",
                 "--set", "federation.rounds=1", "--set", "attack.epochs=[1]", "--set", "federation.batch_size=8",
                 "--set", "federation.num_cpus=0.5", "--set", "federation.round_timeout_s=900",
                 "--set", "attack.epochs_attack_model=3", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    md = (out / "defenses.md").read_text()
    assert "| none | global_passive |" in md and "| secagg | global_passive |" in md
    assert "| secagg | global_passive | not observable" not in md   # judged on the aggregates
    assert "| secagg | local_passive |" in md and "| none | local_passive |" in md
    assert (out / "privacy_utility.png").stat().st_size > 1000
    rows = (out / "defenses.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("defense,attack,observable")
    assert (out / "none" / "seed-0" / "results.json").is_file() and (out / "secagg" / "compare.json").is_file()
    # resumed with every seed done: its own wall time is short, the seeds' runs are reported beside it
    assert main(["compare", "--attacks", "global_passive,local_passive", "--defenses", "none,secagg", "--seeds", "1",
                 "--set", "data.records_per_participant=30", "--set", "model.options={widths: [16]}",
                 "--set", "federation.rounds=1", "--set", "attack.epochs=[1]", "--set", "federation.batch_size=8",
                 "--set", "federation.num_cpus=0.5", "--set", "federation.round_timeout_s=900",
                 "--set", "attack.epochs_attack_model=3", "--out", str(out), "--quiet", "--resume"]) == 0
    seeds_s = json.loads((out / "defenses.json").read_text())["seeds_s"]
    assert seeds_s > 1 and f"the seeds' runs: {seeds_s:.0f} s in all" in (out / "defenses.md").read_text()
