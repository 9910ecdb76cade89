"""Active attacks through the real strategy, in a real Flower simulation on Ray:
isolation really changes what the victim receives; gradient ascent raises the targets'
loss, and the victim's next local epoch lowers its members' loss more than non-members'."""

import numpy as np
import pytest

from fl_sim.catalog import TRAININGS
from fl_sim.federated import train_federated
from fl_sim.models import model_from
from fl_sim.snapshots import SnapshotStore
from fl_sim.splits import target_sets
from fl_sim.target import load_data, make_run_split, model_spec
from fl_sim.training import evaluate
from tests.conftest import tiny_config

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]
VICTIM = 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("active")
    # gamma is per target record: 0.035 x 60 targets is the step the mean-loss rule took with 2.0
    cfg = tiny_config(federation__rounds=4, federation__record_received=True,
                      attack__epochs=[2, 3], attack__gamma=0.035, attack__target_participant=VICTIM,
                      attack__isolate_rounds=[3, 4])
    data = load_data(cfg)
    split = make_run_split(cfg, len(data.y))
    for name in ("global_isolating", "global_gradient_ascent"):
        train_federated(cfg, TRAININGS[name], data, split, run_dir)
    return cfg, data, split, run_dir


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def test_isolation_happens_exactly_in_its_window(runs):
    _, _, _, run_dir = runs
    s = SnapshotStore(run_dir / "snapshots" / "global_isolating")
    for rnd in (1, 2):  # before the window: the aggregate, like everyone
        got = s.get(rnd, VICTIM, "received")
        assert all(_same(s.get(rnd, p, "received"), got) for p in (1, 2, 3))
        assert s.find(rnd, VICTIM, "sent") is None


def test_isolated_victim_receives_exactly_its_own_previous_upload(runs):
    _, _, _, run_dir = runs
    s = SnapshotStore(run_dir / "snapshots" / "global_isolating")
    for rnd in (3, 4):
        got = s.get(rnd, VICTIM, "received")  # recorded by the victim's own client
        assert _same(got, s.get(rnd - 1, VICTIM, "upload"))
        assert not _same(got, s.get(rnd - 1, None, "global"))
        for p in (1, 2, 3):
            assert _same(s.get(rnd, p, "received"), s.get(rnd - 1, None, "global"))


def _loss(cfg, data, arrays, idx):
    model = model_from(model_spec(cfg, data), arrays)
    idx = np.asarray(idx)
    return evaluate(model, data.x[idx], data.y[idx])[0]


def test_gradient_ascent_raises_target_loss_and_members_recover_more(runs):
    cfg, data, split, run_dir = runs
    s = SnapshotStore(run_dir / "snapshots" / "global_gradient_ascent")
    targets = target_sets(split, [VICTIM]).all_indices().tolist()
    members = split.train[VICTIM]
    nonmembers = [i for i in targets if i not in set(members)]
    for rnd in (2, 3):
        sent = s.get(rnd, VICTIM, "sent")
        assert _same(sent, s.get(rnd, VICTIM, "received"))  # the client got what was sent
        plain = s.get(rnd - 1, None, "global")
        assert _loss(cfg, data, sent, targets) > _loss(cfg, data, plain, targets) + 0.05
        after = s.get(rnd, VICTIM, "upload")
        drop_members = _loss(cfg, data, sent, members) - _loss(cfg, data, after, members)
        drop_non = _loss(cfg, data, sent, nonmembers) - _loss(cfg, data, after, nonmembers)
        assert drop_members > drop_non, (rnd, drop_members, drop_non)
