"""Defenses inside the federation, wired from Flower's own components.

- the learning algorithm: FedAvg, or a Flower robust aggregator (``robust``: Krum,
  MultiKrum, FedTrimmedAvg, FedMedian);
- server-side wrappers around it: Flower's central DP (``central_dp_server``: server-side
  clipping; ``central_dp_client``: client-side clipping; fixed or adaptive), inside the global
  attacker, as a real aggregator has them (the attacker sees the replies first);
- client-side mods named in the plan (``clients.participant.defense_mods``):
  ``fixedclipping_mod`` or ``adaptiveclipping_mod``, and ``LocalDpMod``;
- SecAgg+ (``secagg``), which Flower 1.42 runs only on its legacy workflow path, and Opacus
  DP-SGD (``dp_sgd``) in the local training.

What each defense lets the aggregator observe, and the accountant's epsilon where a DP
mechanism is defined, are written per federation to ``defense.json`` beside its snapshots
(:func:`summary`) and read by the scenario layer, which puts them beside each attack.
"""

from __future__ import annotations

import math
from pathlib import Path

from fl_sim.config import Config
from fl_sim.errors import ConfigError
from fl_sim.io import read_json, write_json

SUMMARY_FILE = "defense.json"


# federation.strategy -> Flower's class (flwr.serverapp.strategy)
STRATEGIES = {"fedavg": "FedAvg", "fedprox": "FedProx", "fedavgm": "FedAvgM", "fedadam": "FedAdam",
              "fedyogi": "FedYogi", "fedadagrad": "FedAdagrad", "krum": "Krum", "multikrum": "MultiKrum",
              "trimmed_mean": "FedTrimmedAvg", "median": "FedMedian"}


# The strategy options a user may set, with the range each must lie in: Flower checks none
# of them (FedProx took proximal_mu=-1 and diverged; FedAdam took eta="abc" and failed inside
# a round). (low, high, low_open, high_open); ints where Flower counts participants.
_REAL, _INT = "a number", "an integer"
OPTION_RANGES = {
    "proximal_mu": (_REAL, 0.0, math.inf, False, True),
    "server_learning_rate": (_REAL, 0.0, math.inf, True, True),
    "server_momentum": (_REAL, 0.0, 1.0, False, True),
    "eta": (_REAL, 0.0, math.inf, True, True),
    "eta_l": (_REAL, 0.0, math.inf, True, True),
    "beta_1": (_REAL, 0.0, 1.0, False, True),
    "beta_2": (_REAL, 0.0, 1.0, False, True),
    "tau": (_REAL, 0.0, math.inf, True, True),
    "beta": (_REAL, 0.0, 0.5, False, True),
    "num_malicious_nodes": (_INT, 0, math.inf, False, True),
    "num_nodes_to_select": (_INT, 1, math.inf, False, True),
}


def _check_option(name: str, value, strategy: str) -> None:
    kind, low, high, low_open, high_open = OPTION_RANGES[name]
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == _INT and not is_int or kind == _REAL and not (is_int or isinstance(value, float)):
        raise ConfigError(f"federation.strategy_options.{name}={value!r}: {strategy} needs {kind}")
    if not math.isfinite(value) or value < low or value > high or (low_open and value == low) or (
            high_open and value == high):
        lo, hi = ("(" if low_open else "[") + f"{low:g}", f"{high:g}" + (")" if high_open else "]")
        raise ConfigError(f"federation.strategy_options.{name}={value!r}: outside {lo}, {hi}")


def check_strategy(cfg: Config, known: set[str]) -> dict:
    """The strategy options, checked: names the Flower class takes and fl-sim leaves to the
    user (the participants per round, the reply keys and the metric hooks are fl-sim's),
    types and ranges, and what the robust strategies need of the participant count."""
    name, n = cfg.federation.strategy, cfg.federation.participants
    options = dict(cfg.federation.strategy_options)
    settable = sorted(known & set(OPTION_RANGES))
    for key in sorted(options):
        if key not in known:
            raise ConfigError(f"federation.strategy_options: {key} not taken by Flower's "
                              f"{STRATEGIES[name]} (it takes {', '.join(settable) or 'no options'})")
        if key not in OPTION_RANGES:
            raise ConfigError(f"federation.strategy_options: {key} is set by fl-sim, not by the config "
                              f"(settable for {name}: {', '.join(settable) or 'none'})")
        _check_option(key, options[key], name)
    if name in ("krum", "multikrum"):
        f = options.setdefault("num_malicious_nodes", cfg.defense.byzantine)
        if n < f + 3:  # Krum scores each upload by its n - f - 2 nearest others
            raise ConfigError(f"federation.strategy={name} with {f} malicious participant(s) needs at least "
                              f"{f + 3} participants, not {n}")
        if name == "multikrum" and options.get("num_nodes_to_select", 1) > n - f:
            raise ConfigError(f"federation.strategy_options.num_nodes_to_select={options['num_nodes_to_select']}: "
                              f"at most participants - malicious = {n - f}")
    if name == "trimmed_mean" and int(options.get("beta", 0.2) * n) == 0:
        raise ConfigError(f"federation.strategy_options.beta={options.get('beta', 0.2)} trims nobody among "
                          f"{n} participants")
    return options


def inner_strategy(cfg: Config):
    """The learning algorithm (Message API): ``federation.strategy`` with its options, or the
    robust aggregator of the ``robust`` defense. Every participant trains every round (the
    paper's setting). Options the strategy does not take are a ConfigError."""
    import inspect

    from flwr.serverapp import strategy as flwr_strategies
    from flwr.serverapp.strategy import FedMedian, FedTrimmedAvg, Krum, MultiKrum

    n, d = cfg.federation.participants, cfg.defense
    common = {"fraction_evaluate": 0.0, "min_available_nodes": n, "min_train_nodes": n}
    if "robust" not in d.parts():
        cls = getattr(flwr_strategies, STRATEGIES[cfg.federation.strategy])
        options = check_strategy(cfg, set(inspect.signature(cls.__init__).parameters) - {"self"})
        try:
            return cls(**common, **options)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"federation.strategy={cfg.federation.strategy}: {e}") from None
    if d.aggregator == "krum":
        return Krum(num_malicious_nodes=d.byzantine, **common)
    if d.aggregator == "multikrum":
        # keep the n - f uploads Krum ranks best and average them
        return MultiKrum(num_malicious_nodes=d.byzantine, num_nodes_to_select=n - d.byzantine, **common)
    if d.aggregator == "trimmed_mean":
        return FedTrimmedAvg(beta=d.trim_beta, **common)
    return FedMedian(**common)


def server_wrapped(cfg: Config, inner):
    """``inner`` inside Flower's central DP wrapper when the defense asks for one."""
    from flwr.serverapp import strategy

    d, n = cfg.defense, cfg.federation.participants
    side = ("Server" if "central_dp_server" in d.parts()
            else "Client" if "central_dp_client" in d.parts() else None)
    if side is None:
        return inner
    if d.clipping == "adaptive":
        wrapper = getattr(strategy, f"DifferentialPrivacy{side}SideAdaptiveClipping")
        return wrapper(inner, d.noise_multiplier, n, initial_clipping_norm=d.clipping_norm,
                       target_clipped_quantile=d.target_clipped_quantile, clip_norm_lr=d.clip_norm_lr,
                       clipped_count_stddev=d.clipped_count_stddev)
    wrapper = getattr(strategy, f"DifferentialPrivacy{side}SideFixedClipping")
    return wrapper(inner, d.noise_multiplier, d.clipping_norm, n)


def server_noise(cfg: Config) -> bool:
    """Whether the aggregator adds noise (Flower's central DP wrappers)."""
    return bool({"central_dp_server", "central_dp_client"} & set(cfg.defense.parts()))


def sensitivity(cfg: Config) -> float:
    """LocalDpMod's sensitivity: configured, else the clipping bound (one clipped update
    added or removed)."""
    return cfg.defense.sensitivity or cfg.defense.clipping_norm


def local_dp_params(cfg: Config) -> dict:
    d = cfg.defense
    return {"clipping_norm": d.clipping_norm, "sensitivity": sensitivity(cfg), "epsilon": d.epsilon,
            "delta": d.delta}


def local_dp_std(cfg: Config) -> float:
    """LocalDpMod's noise std per parameter: sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon."""
    return sensitivity(cfg) * math.sqrt(2 * math.log(1.25 / cfg.defense.delta)) / cfg.defense.epsilon


def client_mods(cfg: Config) -> list[str]:
    """The client-side mods the plan names (see ``fl_sim.plan.ClientPlan.mods``)."""
    parts = cfg.defense.parts()
    clip = "adaptive_clip" if cfg.defense.clipping == "adaptive" else "clip"
    return [m for m, on in ((clip, "central_dp_client" in parts), ("local_dp", "local_dp" in parts),
                            ("secagg", "secagg" in parts)) if on]


def secagg_params(cfg: Config, max_examples: int) -> dict:
    """SecAggPlusWorkflow's parameters. ``max_weight`` bounds a participant's example count:
    the protocol scales each upload by count / max_weight before quantizing."""
    d = cfg.defense
    return {"num_shares": d.secagg_shares, "reconstruction_threshold": d.secagg_threshold,
            "clipping_range": d.secagg_clipping_range, "quantization_range": d.secagg_quantization_range,
            "max_weight": float(max(1, max_examples))}


def observed(cfg: Config) -> str:
    """What the aggregator (the global attacker) observes of each participant."""
    parts = cfg.defense.parts()
    if "secagg" in parts:
        return "only the sum of the uploads (SecAgg+), never one participant's"
    what = []
    if "central_dp_server" in parts:
        what.append("raw uploads: server-side clipping and noise act after it records them")
    if "central_dp_client" in parts:
        bound = "an adaptive bound" if cfg.defense.clipping == "adaptive" else "a fixed bound"
        what.append(f"uploads clipped on the client to {bound}, not noised: the noise is added to their mean")
    if "local_dp" in parts:
        what.append("uploads clipped and noised on the client (LocalDpMod)")
    if "dp_sgd" in parts:
        what.append("uploads trained with DP-SGD")
    return "; ".join(what) or "every participant's upload as sent"


def rdp_epsilon(noise_multiplier: float, releases: int, delta: float) -> float | None:
    """Epsilon at ``delta`` of ``releases`` Gaussian releases with ``noise_multiplier``
    (std / sensitivity), no sampling amplification: Opacus's RDP accountant (Flower's own
    RdpAccountant needs the optional ``flwr[dp]`` extra, dp-accounting)."""
    from opacus.accountants import RDPAccountant

    if noise_multiplier <= 0 or releases <= 0:
        return None
    acc = RDPAccountant()
    acc.history = [(noise_multiplier, 1.0, releases)]
    return float(acc.get_epsilon(delta))


def accountant(cfg: Config, store_dir: Path, rounds: int) -> dict:
    """The accountants' epsilons after ``rounds`` rounds, one entry per DP mechanism, each with
    its unit of privacy and the observers its guarantee covers."""
    d, parts, out = cfg.defense, cfg.defense.parts(), {}
    if "dp_sgd" in parts:
        from clients.dp import cumulative_epsilon

        eps = [cumulative_epsilon(store_dir, p, d.delta) for p in range(cfg.federation.participants)]
        out["dp_sgd"] = {"epsilon": max((e for e in eps if e is not None), default=None), "delta": d.delta,
                         "per_participant": eps, "unit": "one record", "covers": ["uploads", "received"]}
    if "central_dp_server" in parts or "central_dp_client" in parts:
        out["central_dp"] = {
            "epsilon": rdp_epsilon(d.noise_multiplier, rounds, d.delta), "delta": d.delta,
            "per_round": rdp_epsilon(d.noise_multiplier, 1, d.delta), "unit": "one participant",
            # the noise is added to the mean: the aggregator saw the un-noised uploads first
            "covers": ["received"], "clipping": d.clipping}
        if d.clipping == "adaptive":
            out["central_dp"]["caveat"] = ("flwr 1.42 scales a round's noise by the next round's bound; "
                                           "where the bound shrinks, the noise is below what this assumes")
    if "local_dp" in parts:
        z = local_dp_std(cfg) / sensitivity(cfg)
        out["local_dp"] = {"epsilon": rdp_epsilon(z, rounds, d.delta), "delta": d.delta,
                           "per_round": d.epsilon, "per_round_delta": d.delta,
                           "basic_composition": {"epsilon": rounds * d.epsilon, "delta": rounds * d.delta},
                           "noise_std": local_dp_std(cfg), "unit": "one participant's update",
                           "covers": ["uploads", "received"]}
    return out


def summary(cfg: Config, store_dir: Path, rounds: int, extra: dict | None = None) -> dict:
    """The defense of one federation (name, what the aggregator observed, accountants),
    written to ``store_dir/defense.json``."""
    out = {"name": cfg.defense.name, "observed_by_aggregator": observed(cfg),
           "accountant": accountant(cfg, store_dir, rounds), **(extra or {})}
    write_json(Path(store_dir) / SUMMARY_FILE, out)
    return out


def read_summary(store_dir: Path) -> dict | None:
    path = Path(store_dir) / SUMMARY_FILE
    return read_json(path) if path.is_file() else None


def accountant_for(summary_: dict | None, observer: str) -> dict | None:
    """The tightest accountant's epsilon whose guarantee covers ``observer`` (``uploads``:
    the aggregator; ``received``: a participant); None when no DP mechanism covers it."""
    if not summary_:
        return None
    covering = [(k, v) for k, v in summary_.get("accountant", {}).items()
                if observer in v.get("covers", []) and v.get("epsilon") is not None]
    if not covering:
        return None
    name, best = min(covering, key=lambda kv: kv[1]["epsilon"])
    out = {"mechanism": name, "epsilon": best["epsilon"], "delta": best["delta"], "unit": best["unit"]}
    out.update({k: best[k] for k in ("per_round", "basic_composition") if k in best})
    return out
