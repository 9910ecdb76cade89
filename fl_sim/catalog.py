"""The scenario catalog: every threat model and defense declared once, as data.

A :class:`Scenario` says what a named attack trains (which federated :class:`Training`,
or the stand-alone / fine-tuning target), what the attacker observes, whose records it
infers membership of, with which attack model, how the scenario layer evaluates it, and
which defenses it admits. The config validator, the experiment runner, ``compare`` and
the reports all read this catalog; nothing else lists attack names.

This module imports nothing of the project beyond the error type: it sits below the
config schema, so the schema can check names against it. The code that runs a scenario
lives in :mod:`fl_sim.scenarios` (``evaluate`` names one of its evaluators).

Adding an attack = one ``register(Scenario(...))`` call (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fl_sim.errors import ConfigError

MODES = ("federated", "standalone", "finetune")


@dataclass(frozen=True)
class Training:
    """How the target is trained while (or before) it is attacked.

    ``name`` is also the snapshot sub-directory. Federated trainings differ in what the
    aggregator (``isolate``, ``global_ascent``) or a participant (``local_ascent``) does.
    """
    name: str
    mode: str = "federated"
    isolate: bool = False
    global_ascent: bool = False
    local_ascent: bool = False
    local_boost: bool = False        # the local attacker scales its ascent by N (beyond the paper)
    # the aggregator's ascent gives every target record's gradient unit norm before the sum
    # (beyond the paper: under the sum rule fitted members, with near-zero gradients, hardly push)
    normalized: bool = False
    defenses: tuple[str, ...] = ("none", "dp_sgd", "central_dp_server", "central_dp_client", "local_dp",
                                 "secagg", "robust")
    summary: str = ""

    def not_runnable(self, defense: str) -> str | None:
        """Why this training cannot run under ``defense`` (None: it can)."""
        if self.isolate and "secagg" in defense_parts(defense):
            return ("not observable under secagg: the isolating aggregator must hold the victim's own "
                    "upload to send it back, and SecAgg+ shows it only the sum of the uploads")
        return None


TRAININGS: dict[str, Training] = {t.name: t for t in (
    Training("passive", summary="plain FedAvg; every upload and aggregate recorded"),
    Training("global_gradient_ascent", global_ascent=True,
             summary="the aggregator pushes the model up the victim's targets' loss"),
    Training("global_isolating", isolate=True,
             summary="the aggregator sends the victim only its own previous upload"),
    Training("global_isolating_gradient_ascent", isolate=True, global_ascent=True,
             summary="isolation, and the victim's own model pushed up the loss"),
    Training("global_gradient_ascent_normalized", global_ascent=True, normalized=True,
             summary="the aggregator pushes the model up the victim's targets' loss, each "
                     "target's gradient at unit norm"),
    Training("global_isolating_gradient_ascent_normalized", isolate=True, global_ascent=True, normalized=True,
             summary="isolation, and the victim's own model pushed up the loss, each target's "
                     "gradient at unit norm"),
    Training("local_gradient_ascent", local_ascent=True,
             summary="one participant pushes its upload up the others' targets' loss"),
    Training("local_gradient_ascent_boosted", local_ascent=True, local_boost=True,
             summary="the same push scaled by the number of participants, so FedAvg's "
                     "averaging does not divide it away"),
    # the defenses are applied by the federated clients; stand-alone training has none
    Training("standalone", mode="standalone", defenses=("none",),
             summary="one model trained alone"),
    Training("finetune", mode="finetune", defenses=("none",),
             summary="trained on D, then fine-tuned on D_delta"),
)}


@dataclass(frozen=True)
class Scenario:
    """One threat model.

    observer: ``uploads`` (the aggregator sees each participant's upload), ``received``
      (a participant sees the global models), ``target`` (the stand-alone target's
      snapshots).
    targets: ``each_participant`` (reported as the mean), ``victim``
      (``attack.target_participant``), ``union_of_others`` (every participant's records
      but the local attacker's), ``target`` (the stand-alone training set), or one of the
      fine-tuning pairs ``d_vs_delta``, ``d_vs_nonmembers``, ``delta_vs_nonmembers``.
    snapshots: ``attack_epochs`` (the configured epochs) or ``final`` (the last model).
    attack: an attack-model kind the scenario layer knows (``whitebox``: the Nasr network,
      or the unsupervised one with ``attack.unsupervised``; ``compact``, ``compact_references``,
      ``unsupervised``,
      ``loss``, ``lira``, ``shadow``), or a factory ``(cfg, seed) -> MembershipAttack``.
    evaluate: the scenario-layer evaluator that runs it (``whitebox``, ``calibrated_uploads``,
      ``shadow``, ``lira``).
    """
    name: str
    modes: tuple[str, ...]
    observer: str
    targets: str
    attack: str | Callable[[Any, int], Any]
    training: str | None = None     # federated: a TRAININGS key; None: the mode's own
    snapshots: str = "attack_epochs"
    evaluate: str = "whitebox"
    defenses: tuple[str, ...] = ("none", "dp_sgd", "central_dp_server", "central_dp_client", "local_dp",
                                 "secagg", "robust")
    # what the attack needs that SecAgg+ hides (the aggregator then holds only the sum of the
    # uploads): "aggregate" = it runs on the aggregates instead; None = each participant's
    # upload (for observer "uploads"); any other text names what it needs
    under_secagg: str | None = None
    summary: str = ""

    def training_for(self, mode: str) -> Training:
        return TRAININGS[self.training if mode == "federated" else mode]

    def not_observable(self, defense: str) -> str | None:
        """Why this attack cannot observe what it needs under ``defense`` (None: it can)."""
        if "secagg" not in defense_parts(defense) or self.observer != "uploads":
            return None
        if self.under_secagg == "aggregate":
            return None
        needs = self.under_secagg or "each participant's own upload"
        return (f"not observable under secagg: the attack needs {needs}, and SecAgg+ shows the "
                "aggregator only the sum of the uploads")

    def observed_role(self, defense: str) -> str:
        """The snapshot role the attacker reads: ``upload``, or ``global`` (the aggregate)
        when SecAgg+ hides the uploads and the attack runs on the aggregates."""
        if self.observer == "uploads" and "secagg" in defense_parts(defense) and self.under_secagg == "aggregate":
            return "global"
        return {"uploads": "upload", "received": "received"}.get(self.observer, self.observer)


_SCENARIOS: dict[str, Scenario] = {}
DEFENSES: dict[str, str] = {
    "none": "no defense",
    "dp_sgd": "DP-SGD (Opacus) in every participant's local training, record-level, accounted across "
              "rounds; the aggregator sees each (privatized) upload",
    "central_dp_server": "Flower's DifferentialPrivacyServerSideFixedClipping (or ...AdaptiveClipping with "
                         "defense.clipping=adaptive): the aggregator clips each update (upload - global) "
                         "to defense.clipping_norm and noises the mean; a curious "
                         "aggregator still sees every raw upload",
    "central_dp_client": "Flower's DifferentialPrivacyClientSideFixedClipping with fixedclipping_mod (or "
                         "the adaptive pair with defense.clipping=adaptive) on every participant: clipped "
                         "updates arrive, the aggregator noises their mean; it "
                         "sees clipped, un-noised uploads",
    "local_dp": "Flower's LocalDpMod on every participant: each update clipped and noised before it "
                "leaves; the aggregator sees noised uploads",
    "secagg": "Flower's SecAgg+ (legacy workflow + secaggplus_mod): the aggregator sees only the sum of "
              "the uploads",
    "robust": "a Flower robust aggregator (defense.aggregator: krum, multikrum, trimmed_mean, median) "
              "instead of FedAvg; the aggregator sees every upload",
}

# Defenses that compose (``defense.name: secagg+local_dp``). Every other pair is refused,
# with the reason below when there is a specific one.
COMPOSABLE: frozenset[frozenset[str]] = frozenset(frozenset(p) for p in (
    ("dp_sgd", "central_dp_server"), ("dp_sgd", "central_dp_client"), ("dp_sgd", "local_dp"),
    ("dp_sgd", "secagg"), ("dp_sgd", "robust"), ("local_dp", "secagg"), ("local_dp", "robust"),
))
REFUSED: dict[frozenset[str], str] = {
    frozenset(("secagg", "central_dp_server")): "server-side clipping needs each upload, which SecAgg+ hides",
    frozenset(("secagg", "robust")): "a robust aggregator ranks the individual uploads, which SecAgg+ hides",
    frozenset(("secagg", "central_dp_client")): "Flower 1.42's central DP wrappers are Message-API "
                                               "strategies, and SecAgg+ runs on the legacy workflow only",
    frozenset(("central_dp_server", "central_dp_client")): "one central DP mechanism at a time",
    frozenset(("robust", "central_dp_server")): "Flower's central DP noise is calibrated to the mean of "
                                               "clipped updates (FedAvg), not to a robust aggregate",
    frozenset(("robust", "central_dp_client")): "Flower's central DP noise is calibrated to the mean of "
                                               "clipped updates (FedAvg), not to a robust aggregate",
    frozenset(("local_dp", "central_dp_server")): "two noise mechanisms on the same update: choose one",
    frozenset(("local_dp", "central_dp_client")): "two noise mechanisms on the same update: choose one",
}


def defense_parts(defense: str) -> list[str]:
    """The defenses of a ``defense.name`` (``"secagg+local_dp"`` -> both; ``"none"`` -> [])."""
    return [p for p in (d.strip() for d in defense.split("+")) if p and p != "none"]


def check_defense_name(defense: str) -> None:
    """Raise ConfigError unless ``defense`` names known defenses that compose."""
    parts = [d.strip() for d in defense.split("+")]
    for p in parts:
        if p not in DEFENSES:
            raise ConfigError(f"unknown defense {p!r}; valid: {', '.join(DEFENSES)}, or a composition "
                              f"like secagg+local_dp")
    if len(parts) == 1:
        return
    if "none" in parts or len(set(parts)) != len(parts):
        raise ConfigError(f"{defense!r}: compose distinct defenses, without none")
    for i, a in enumerate(parts):
        for b in parts[i + 1:]:
            pair = frozenset((a, b))
            if pair not in COMPOSABLE:
                why = REFUSED.get(pair, "this pair is not wired")
                ok = ", ".join(sorted("+".join(sorted(p)) for p in COMPOSABLE))
                raise ConfigError(f"{a} and {b} do not compose: {why}; pairs that do: {ok}")


def register(scenario: Scenario) -> Scenario:
    """Add ``scenario`` to the catalog (a name may be registered once)."""
    if scenario.name in _SCENARIOS:
        raise ValueError(f"scenario {scenario.name!r} is already registered")
    bad = [m for m in scenario.modes if m not in MODES]
    if bad or (scenario.training is not None and scenario.training not in TRAININGS):
        raise ValueError(f"scenario {scenario.name!r}: unknown mode {bad} or training "
                         f"{scenario.training!r}")
    if "federated" in scenario.modes and scenario.training is None:
        raise ValueError(f"scenario {scenario.name!r}: a federated scenario names its training")
    _SCENARIOS[scenario.name] = scenario
    return scenario


def unregister(name: str) -> None:
    _SCENARIOS.pop(name, None)


def names(mode: str | None = None) -> list[str]:
    return [n for n, s in _SCENARIOS.items() if mode is None or mode in s.modes]


def get(name: str) -> Scenario:
    if name not in _SCENARIOS:
        raise ConfigError(f"unknown attack {name!r}; valid: {', '.join(_SCENARIOS)}")
    return _SCENARIOS[name]


def check_defense(defense: str, attack_names: list[str], mode: str) -> None:
    """Raise ConfigError when the run's training or one of its attacks refuses ``defense``
    (a name or a composition such as ``secagg+local_dp``)."""
    check_defense_name(defense)
    parts = defense_parts(defense) or ["none"]
    for t in trainings_needed(attack_names, mode):
        if any(p not in t.defenses for p in parts):
            raise ConfigError(f"defense.name={defense} is applied by the federated clients "
                              f"only; federation.mode={mode} trains without it")
    for n in attack_names:
        s = _SCENARIOS.get(n)
        if s is not None and mode in s.modes and any(p not in s.defenses for p in parts):
            raise ConfigError(f"defense.name={defense}: attack {n} admits only "
                              f"{', '.join(s.defenses)}")


def trainings_needed(attack_names: list[str], mode: str) -> list[Training]:
    """The trainings a run needs, in a fixed order: the mode's base training first (for
    federated runs the passive one, which also measures the target), then one per active
    training the attacks name."""
    base = "passive" if mode == "federated" else mode
    out = [TRAININGS[base]]
    for n in attack_names:
        s = _SCENARIOS.get(n)
        if s is not None and mode in s.modes:
            t = s.training_for(mode)
            if t not in out:
                out.append(t)
    return out


_STANDALONE = ("standalone", "finetune")
_FED = ("federated",)
_NO_DEFENSE = ("none",)  # stand-alone training runs without the federated clients' DP-SGD

for _s in (
    # federated, global attacker (the aggregator): Nasr et al. Sec. V, Table X
    # under SecAgg+ the attacks that read one model per round run on the aggregates, which
    # a passive aggregator holds too (judged on every participant's records); the ones that
    # need each participant's own upload are not observable
    Scenario("global_passive", _FED, "uploads", "each_participant", "whitebox",
             training="passive", under_secagg="aggregate",
             summary="the aggregator reads every upload; mean over participants"),
    # under SecAgg+ the ascent still goes to everyone, and its effect shows in the aggregate
    Scenario("global_gradient_ascent", _FED, "uploads", "victim", "whitebox",
             training="global_gradient_ascent", under_secagg="aggregate",
             summary="active: ascent on the victim's targets"),
    Scenario("global_isolating", _FED, "uploads", "victim", "whitebox",
             training="global_isolating", under_secagg="the victim's own upload (to send it back)",
             summary="active: the victim trains alone"),
    Scenario("global_isolating_gradient_ascent", _FED, "uploads", "victim", "whitebox",
             training="global_isolating_gradient_ascent",
             under_secagg="the victim's own upload (to send it back)", summary="active: isolation + ascent"),
    # beyond the paper: every target record pushes with the same weight
    Scenario("global_gradient_ascent_normalized", _FED, "uploads", "victim", "whitebox",
             training="global_gradient_ascent_normalized", under_secagg="aggregate",
             summary="active, beyond the paper: ascent with each target's gradient at unit norm"),
    Scenario("global_isolating_gradient_ascent_normalized", _FED, "uploads", "victim", "whitebox",
             training="global_isolating_gradient_ascent_normalized",
             under_secagg="the victim's own upload (to send it back)",
             summary="active, beyond the paper: isolation + the normalised ascent"),
    # federated, local attacker (a participant)
    Scenario("local_passive", _FED, "received", "union_of_others", "whitebox",
             training="passive", summary="a participant reads the global models"),
    Scenario("local_gradient_ascent", _FED, "received", "union_of_others", "whitebox",
             training="local_gradient_ascent", summary="active: a participant's upload ascends"),
    Scenario("local_gradient_ascent_boosted", _FED, "received", "union_of_others", "whitebox",
             training="local_gradient_ascent_boosted",
             summary="beyond the paper: the local ascent scaled by N to survive averaging"),
    # federated, beyond the paper
    Scenario("global_calibrated", _FED, "uploads", "each_participant", "lira",
             training="passive", evaluate="calibrated_uploads",
             under_secagg="each participant's upload and the others' as reference models",
             summary="LiRA with the other participants' uploads as OUT references"),
    Scenario("global_compact", _FED, "uploads", "each_participant", "compact",
             training="passive", under_secagg="aggregate",
             summary="logistic regression on losses and gradient norms"),
    Scenario("global_compact_references", _FED, "uploads", "each_participant", "compact_references",
             training="passive",
             under_secagg="the other participants' uploads as reference models",
             summary="global_compact plus the gap to the other participants' uploads"),
    Scenario("global_loss_threshold", _FED, "uploads", "each_participant", "loss",
             training="passive", under_secagg="aggregate",
             summary="Yeom et al.: the mean loss under the victim's uploads"),
    Scenario("global_unsupervised", _FED, "uploads", "each_participant", "unsupervised",
             training="passive", under_secagg="aggregate",
             summary="encoder-decoder + spectral clustering, no labels"),
    # stand-alone and fine-tuning (Nasr et al. Sec. IV, Table IX)
    Scenario("standalone_whitebox", _STANDALONE, "target", "target", "whitebox",
             defenses=_NO_DEFENSE, summary="supervised white-box attack on the target"),
    Scenario("standalone_unsupervised", _STANDALONE, "target", "target", "unsupervised",
             defenses=_NO_DEFENSE, summary="unsupervised white-box attack on the target"),
    Scenario("standalone_compact", _STANDALONE, "target", "target", "compact",
             defenses=_NO_DEFENSE, summary="logistic regression on losses and gradient norms"),
    Scenario("loss_threshold", _STANDALONE, "target", "target", "loss", snapshots="final",
             defenses=_NO_DEFENSE, summary="Yeom et al.: the final model's loss"),
    Scenario("standalone_blackbox_shadow", _STANDALONE, "target", "target", "shadow",
             snapshots="final", evaluate="shadow", defenses=_NO_DEFENSE,
             summary="Shokri et al. shadow models on the output probabilities"),
    Scenario("calibrated", _STANDALONE, "target", "target", "lira", snapshots="final",
             evaluate="lira", defenses=_NO_DEFENSE,
             summary="LiRA offline with reference models trained like the target"),
    Scenario("finetune_d_vs_delta", ("finetune",), "target", "d_vs_delta", "whitebox",
             snapshots="before_after", defenses=_NO_DEFENSE, summary="tell D_delta from D"),
    Scenario("finetune_d_vs_nonmembers", ("finetune",), "target", "d_vs_nonmembers",
             "whitebox", snapshots="before_after", defenses=_NO_DEFENSE,
             summary="tell D from non-members"),
    Scenario("finetune_delta_vs_nonmembers", ("finetune",), "target", "delta_vs_nonmembers",
             "whitebox", snapshots="before_after", defenses=_NO_DEFENSE,
             summary="tell D_delta from non-members"),
):
    register(_s)
