import pytest

from fl_sim.config import Config, load_config
from fl_sim.errors import ConfigError


def test_packaged_default_has_the_documented_keys():
    cfg = load_config(None)
    assert cfg.federation.participants == 4
    for key in ("seed", "data.name", "data.root", "data.records_per_participant", "model.name",
                "federation.participants", "federation.rounds", "federation.local_epochs",
                "federation.batch_size", "federation.lr", "attack.names",
                "attack.target_participant", "attack.epochs", "attack.gamma", "defense.name",
                "output.dir"):
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)


def test_set_overrides_scalars_and_lists(tmp_path):
    cfg = load_config(None, ["federation.rounds=3", "attack.names=[global_passive,local_passive]",
                             "attack.epochs=[2, 3]"])
    assert cfg.federation.rounds == 3
    assert cfg.attack.names == ["global_passive", "local_passive"]
    assert cfg.attack.epochs == [2, 3]


@pytest.mark.parametrize("override, fragment", [
    ("federation.rounds=0", "federation.rounds"),
    ("federation.participants=-1", "federation.participants"),
    ("nonsense.key=1", "nonsense"),
    ("federation.roundz=3", "federation.roundz"),
    ("attack.names=[no_such_attack]", "no_such_attack"),
    ("defense.name=magic", "magic"),
    ("attack.gamma=.nan", "attack.gamma"),
    ("attack.known_fraction=1.5", "attack.known_fraction"),
    ("attack.target_participant=9", "target_participant"),
    ("attack.epochs=[99]", "attack.epochs"),
    ("federation.rounds=abc", "federation.rounds"),
    ("federation.rounds", "key=value"),
])
def test_bad_values_are_one_line_errors_naming_the_key(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_that_does_not_parse(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("federation: {rounds: 3\n")
    with pytest.raises(ConfigError, match="does not parse"):
        load_config(p)


def test_schema_defaults_are_valid():
    Config()


@pytest.mark.parametrize("rounds, epochs", [(100, [40, 60, 80, 90, 100]), (30, [12, 18, 24, 27, 30]),
                                            (2, [1, 2]), (1, [1])])
def test_omitted_attack_epochs_follow_the_rounds_in_the_papers_proportions(rounds, epochs):
    cfg = load_config(None, [f"federation.rounds={rounds}"])
    assert cfg.attack.epochs is None and cfg.attack_epochs() == epochs
