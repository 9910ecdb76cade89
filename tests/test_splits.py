import pytest

from fl_sim.errors import ConfigError
from fl_sim.splits import Split, make_split


def test_split_is_disjoint_balanced_and_deterministic(tmp_path):
    s = make_split(1000, 4, 100, 0.5, seed=7)
    sets = s.train + [s.known_nonmembers, s.eval_nonmembers, s.reference]
    flat = [i for part in sets for i in part]
    assert len(flat) == len(set(flat))
    for p in range(4):
        assert len(s.train[p]) == 100
        assert sorted(s.known_members[p] + s.eval_members[p]) == s.train[p]
        assert len(s.known_members[p]) == 50
    # enough non-members to balance the local attacker's target (3 participants' data)
    assert len(s.known_nonmembers) == 150 and len(s.eval_nonmembers) == 150
    idx, lab = s.balanced(s.eval_members[0], s.eval_nonmembers)
    assert lab.sum() == len(lab) / 2
    assert make_split(1000, 4, 100, 0.5, seed=7) == s
    assert make_split(1000, 4, 100, 0.5, seed=8).train != s.train
    s.save(tmp_path / "split.json")
    assert Split.load(tmp_path / "split.json") == s


def test_too_many_records_is_a_config_error():
    with pytest.raises(ConfigError, match="records_per_participant"):
        make_split(100, 4, 25, 0.5, seed=0)
