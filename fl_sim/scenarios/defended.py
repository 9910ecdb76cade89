"""What a defense changes in the scenario layer: whether an attack can observe what it needs
(SecAgg+ hides individual uploads), what the aggregator observed, the accountant's epsilon
that covers the attacker, and the empirical epsilon (:mod:`attacks.audit`) beside it."""

from __future__ import annotations

import numpy as np

from attacks.audit import CONFIDENCE, empirical_epsilon
from fl_sim import defense
from fl_sim.catalog import Scenario
from fl_sim.federated import runs_of
from fl_sim.scenarios.common import AttackContext, fit_and_score


def audited_fit(ctx: AttackContext, attack, known_feats, known_lab, eval_feats, eval_lab,
                tests: int = 1) -> dict:
    """``fit_and_score`` plus ``empirical_epsilon``: the test chosen on the known records'
    scores, bounded on the evaluation records' at confidence 1 - 0.05 / ``tests``
    (Bonferroni over the participants an attack runs on)."""
    res = fit_and_score(attack, known_feats, known_lab, eval_feats, eval_lab)
    res["empirical_epsilon"] = audit_scores(ctx, attack.score_samples(known_feats), known_lab,
                                            attack.score_samples(eval_feats), eval_lab, tests)
    return res


def audit_scores(ctx: AttackContext, known_scores, known_lab, eval_scores, eval_lab, tests: int = 1) -> dict:
    return empirical_epsilon(np.asarray(known_scores), known_lab, np.asarray(eval_scores), eval_lab,
                             ctx.cfg.defense.delta, 1 - (1 - CONFIDENCE) / max(1, tests))


def defense_block(ctx: AttackContext, scenario: Scenario) -> dict:
    """The run's defense as this attack met it: name, what the attacker observed, and the
    accountant's epsilon whose guarantee covers that observer (None: no DP mechanism does)."""
    cfg = ctx.cfg
    training = scenario.training_for("federated")
    summary = None
    for name, _ in runs_of(cfg, training):
        if (summary := defense.read_summary(ctx.run_dir / "snapshots" / name)) is not None:
            break
    observer = "received" if scenario.observer == "received" else "uploads"
    seen = (defense.observed(cfg) if observer == "uploads" else
            "the aggregates it received (after any server-side noise)")
    if scenario.observed_role(cfg.defense.name) == "global":
        seen = "the aggregates (SecAgg+ hides every upload)"
    return {"name": cfg.defense.name, "observed": seen,
            "accountant_epsilon": defense.accountant_for(summary, observer)}
