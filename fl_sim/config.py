"""Experiment configuration: a pydantic schema, YAML loading and ``--set`` overrides.

Every key has a default, so an empty file (or none) is a valid experiment. Unknown keys are
errors: a typo must never silently fall back to a default. All bad input surfaces as
:class:`fl_sim.errors.ConfigError` with a one-line message naming the key.
"""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fl_sim import catalog
from fl_sim.errors import ConfigError

# Nasr et al. observe epochs 40, 60, 80, 90 and 100 of 100 (Purchase100, Texas100)
PAPER_EPOCH_FRACTIONS = (0.4, 0.6, 0.8, 0.9, 1.0)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    name: str = "digits"
    root: str | None = None  # None: $FL_SIM_DATA_ROOT, else ./data
    records_per_participant: int = Field(200, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the loader (e.g. subset)


class ModelConfig(_Section):
    name: str = "fc"
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the builder (e.g. widths)


_RAY_HOST_PORT = re.compile(r"(?:ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})")


def ray_address_problem(address: str) -> str | None:
    """Why ``address`` is no Ray address fl-sim can join ("auto", "local", "HOST:PORT",
    "ray://HOST:PORT"), or None. Also applied to $RAY_ADDRESS when the federation starts."""
    if address in ("auto", "local"):
        return None
    m = _RAY_HOST_PORT.fullmatch(address)
    if m is None:
        return f"{address!r} is not a Ray address: expected auto, HOST:PORT or ray://HOST:PORT"
    if not 0 < int(m.group(2)) < 65536:
        return f"{address!r}: port {m.group(2)} is outside 1..65535"
    return None


class FederationConfig(_Section):
    mode: Literal["federated", "standalone", "finetune"] = "federated"
    participants: int = Field(4, gt=0)
    rounds: int = Field(10, gt=0)
    local_epochs: int = Field(1, gt=0)
    batch_size: int = Field(32, gt=0)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    num_cpus: float = Field(1.0, gt=0)  # Ray CPU share per participant
    num_gpus: float | None = Field(None, ge=0)  # None: 1/N of a GPU when the device is CUDA, else 0
    # the learning algorithm, a Flower strategy (always wrapped by the global attacker):
    # fedavg, fedprox (the clients add the proximal term Flower sends), fedavgm, fedadam,
    # fedyogi, fedadagrad (server-side optimisers), krum, multikrum, trimmed_mean, median;
    # strategy_options: that strategy's keyword arguments (proximal_mu, eta, tau, beta, ...)
    strategy: Literal["fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "krum", "multikrum",
                      "trimmed_mean", "median"] = "fedavg"
    strategy_options: dict[str, Any] = Field(default_factory=dict)
    # where local training, DP-SGD, gradient ascent, features and attack models compute:
    # auto = CUDA when torch sees it (in the process that computes), else the CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # an existing Ray cluster to run the participants on ("HOST:PORT" of its head's GCS,
    # "ray://HOST:PORT" for Ray Client, "auto": the one `ray start` left on this machine);
    # None: $RAY_ADDRESS when set, else a Ray of this process's own, on loopback, with
    # token authentication (docs/ray-cluster.md)
    ray_address: str | None = None
    # how long joining ray_address may take before the run stops with one line; Ray's own
    # retries would wait more than 10 minutes for an address where nothing listens
    ray_connect_timeout_s: float = Field(30.0, gt=0, le=3600)
    round_timeout_s: float = Field(600.0, gt=0)
    # which rounds' snapshots stay on disk: "attack" = the attack epochs and their
    # neighbours (what the configured attacks read), "all", or a list; the latest round's
    # aggregate is kept too until the next one replaces it (what a resume continues from)
    keep_rounds: list[int] | Literal["all", "attack"] = "attack"
    finetune_fraction: float = Field(0.4, gt=0, lt=1)  # share of training set that is D_delta
    finetune_epochs: int | None = Field(None, gt=0)  # epochs on D_delta; None: rounds // 2 (>= 1)
    fail: dict[int, list[int]] = Field(default_factory=dict)  # test-only: round -> participants that raise
    record_received: bool = False  # every participant records the model it receives (audits)

    @field_validator("lr", "num_cpus", "num_gpus", "round_timeout_s", "weight_decay")
    @classmethod
    def _finite_lr(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @field_validator("keep_rounds")
    @classmethod
    def _kept_rounds(cls, v):
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("give a non-empty list of distinct rounds, 'all' or 'attack'")
        return v

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, v: str | None) -> str | None:
        if v is not None and (problem := ray_address_problem(v)):
            raise ValueError(problem)
        return v


class AttackConfig(_Section):
    names: list[str] = Field(default_factory=lambda: ["global_passive"])
    target_participant: int = Field(0, ge=0)
    # rounds whose snapshots the attack uses; None: the paper's proportions of the rounds
    epochs: list[int] | None = None
    # gradient-ascent step per target record (Nasr et al.: W <- W + gamma * grad L(W; x));
    # the default: best TPR at 1 % FPR at no cost to the victim in a 3-seed sweep on
    # Location-30 (docs/results/location30_fc_sweeps: 1e-6..1e-4 tie, 1e-3 costs 9 points)
    gamma: float = 1e-5
    # rounds where active attacks push; None: the attack epochs (global attacker) or the
    # round before each (local attacker: the others react in the round after its push)
    ascent_rounds: list[int] | None = None
    # rounds in which the isolating aggregator sends the victim only its own model; None:
    # every round from isolate_from on (None: the first attack epoch; 1: all of training).
    # The default measured on Location-30 over 3 seeds (docs/results/location30_fc_sweeps):
    # +0.06 AUC over passive for 2.6 points of the victim's test accuracy; all of training
    # gives +0.09 for 18 points, the rounds around each observed epoch +0.03 for none
    isolate_rounds: list[int] | None = None
    isolate_from: int | None = Field(None, ge=1)
    # whose records the active attacks target: the target participant, every participant
    # in turn (one federation each, reported as the mean), or a list
    victims: list[int] | Literal["target", "all"] = "target"
    known_fraction: float = Field(0.5, gt=0, lt=1)  # share of each member set the attacker knows
    layers: list[str] | str = "last"  # gradient layers: "last", "last2", "all" or module names
    output_layers: list[str] = Field(default_factory=list)
    unsupervised: bool = False
    epochs_attack_model: int = Field(80, gt=0)
    lr_attack_model: float = Field(1e-3, gt=0)
    conv_filters: int = Field(32, gt=0)  # paper: 1000; 32 generalizes better with ~1k known records
    # how the white-box network reads per-example gradients: whole matrices through a
    # convolution (the paper) or one log norm per parameter. "norm" is the default: with
    # a few hundred known records per victim the matrix component overfits (Location-30
    # seed 0, global passive: AUC 0.830 with matrices, 0.873 with norms; fmnist100_fc
    # seed 0: 0.802 and 0.821)
    gradients: Literal["norm", "matrix"] = "norm"
    # what the white-box network reads per snapshot. "references" (beyond the paper): the
    # global attacker also runs the records through the other participants' uploads of
    # the same round -- models it holds anyway, trained without the victim's records --
    # and reads the gap (see attacks.nasr.reference_gap); the paper's network reads
    # outputs, loss, label and gradients
    network_inputs: list[Literal["outputs", "loss", "label", "gradients", "references"]] = Field(
        default_factory=lambda: list(NETWORK_INPUTS), min_length=1)
    reference_models: int = Field(4, gt=0)
    seed_offset: int = 0

    @field_validator("names")
    @classmethod
    def _known_attacks(cls, v: list[str]) -> list[str]:
        valid = catalog.names()
        for n in v:
            if n not in valid:
                raise ValueError(f"unknown attack {n!r}; valid: {', '.join(valid)}")
        return v

    @field_validator("network_inputs", "names", "output_layers")
    @classmethod
    def _unique_inputs(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"lists an entry twice: {v}")
        return v

    @field_validator("epochs", "ascent_rounds", "isolate_rounds", "victims", "layers")
    @classmethod
    def _nonempty_unique(cls, v):
        # an empty list would silently mean "the default rule" (None) or nothing at all
        if isinstance(v, list):
            if not v:
                raise ValueError("empty list: leave the key out for the default")
            if len(set(v)) != len(v):
                raise ValueError(f"lists an entry twice: {v}")
        return v

    @field_validator("gamma")
    @classmethod
    def _finite_gamma(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v


NETWORK_INPUTS = ("outputs", "loss", "label", "gradients", "references")


class DefenseConfig(_Section):
    """One defense, or several joined by ``+`` (``secagg+local_dp``; see
    ``catalog.COMPOSABLE``). README "Defenses" says what the aggregator observes under each."""
    name: str = "none"
    # dp_sgd: Gaussian noise std = noise_multiplier * max_grad_norm on each clipped per-example
    # gradient sum; central_dp_*: std = noise_multiplier * clipping_norm / N on the mean update
    noise_multiplier: float = Field(1.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)        # dp_sgd: per-example gradient L2 bound
    # central_dp_*, local_dp: L2 bound on a participant's update (upload - model it received)
    clipping_norm: float = Field(1.0, gt=0)
    # local_dp (Flower's LocalDpMod): per-round (epsilon, delta) of the Gaussian mechanism,
    # noise std = sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon on every parameter
    epsilon: float = Field(1.0, gt=0)
    sensitivity: float | None = Field(None, gt=0)  # None: clipping_norm (add/remove one update)
    # central_dp_*: Flower's fixed clipping, or its adaptive clipping (Andrew et al. 2019):
    # the bound starts at clipping_norm and moves each round, C <- C exp(-clip_norm_lr *
    # (noisy fraction of clipped updates - target_clipped_quantile)); the count's noise std is
    # clipped_count_stddev (None: participants / 20, Flower's default). noise_multiplier is
    # the total, split between the update and the count, so the accountant's epsilon holds
    clipping: Literal["fixed", "adaptive"] = "fixed"
    target_clipped_quantile: float = Field(0.5, ge=0, le=1)
    clip_norm_lr: float = Field(0.2, gt=0)
    clipped_count_stddev: float | None = Field(None, gt=0)
    # the delta of every accountant's epsilon and of the empirical epsilon
    delta: float = Field(1e-5, gt=0, lt=1)
    # robust: Flower's Krum, MultiKrum, FedTrimmedAvg or FedMedian in place of FedAvg
    aggregator: Literal["krum", "multikrum", "trimmed_mean", "median"] = "krum"
    byzantine: int = Field(1, ge=0)                # (multi)krum: assumed malicious participants
    trim_beta: float = Field(0.25, ge=0, lt=0.5)   # trimmed_mean: fraction cut at each end
    # secagg (Flower's SecAgg+): shares per secret key and how many rebuild it (ints, or
    # fractions of the participants / shares); parameters are clipped to +-clipping_range
    # before quantization into quantization_range levels
    secagg_shares: int | float = Field(1.0, gt=0)
    secagg_threshold: int | float = Field(0.5, gt=0)
    secagg_clipping_range: float = Field(8.0, gt=0)
    secagg_quantization_range: int = Field(2 ** 22, gt=1)

    @field_validator("name")
    @classmethod
    def _known_defense(cls, v: str) -> str:
        try:
            catalog.check_defense_name(v)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("noise_multiplier", "max_grad_norm", "clipping_norm", "epsilon", "secagg_clipping_range")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    def parts(self) -> list[str]:
        return catalog.defense_parts(self.name)


class OutputConfig(_Section):
    dir: str | None = None  # None: runs/<timestamp>-<dataset>-<model>


# numpy's SeedSequence-free generators (np.random.seed) take 0..2**32 - 1; torch takes more.
# A comparison uses seed, seed + 1, ...: compare checks its last seed against this too
MAX_SEED = 2**32 - 1


class Config(_Section):
    seed: int = Field(0, ge=0, le=MAX_SEED)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        fed, att = self.federation, self.attack
        if fed.mode == "federated" and att.target_participant >= fed.participants:
            raise ValueError(
                f"attack.target_participant={att.target_participant} is out of range "
                f"for federation.participants={fed.participants}"
            )
        for key, rounds in (("attack.epochs", att.epochs), ("attack.ascent_rounds", att.ascent_rounds),
                            ("attack.isolate_rounds", att.isolate_rounds),
                            ("attack.isolate_from", [att.isolate_from] if att.isolate_from else [])):
            for r in rounds or []:
                if not 1 <= r <= fed.rounds:
                    raise ValueError(f"{key} contains {r}, outside 1..federation.rounds={fed.rounds}")
        if isinstance(att.victims, list) and (not att.victims or any(
                not 0 <= v < fed.participants for v in att.victims)):
            raise ValueError(f"attack.victims {att.victims} must name participants "
                             f"0..{fed.participants - 1}")
        for r, parts in fed.fail.items():
            if not 1 <= int(r) <= fed.rounds or any(not 0 <= p < fed.participants for p in parts):
                raise ValueError(f"federation.fail has round {r} or participants {parts} out of range")
        try:
            catalog.check_defense(self.defense.name, att.names, fed.mode)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        self._defense_checks()
        return self

    def _defense_checks(self) -> None:
        d, n = self.defense, self.federation.participants
        parts = d.parts()
        strategy = self.federation.strategy
        if strategy != "fedavg" and ("robust" in parts or "secagg" in parts):
            raise ValueError(f"federation.strategy={strategy} with defense {d.name}: the defense chooses the "
                             "aggregation (robust aggregator / SecAgg+ on FedAvg); leave the strategy at fedavg")
        if strategy == "fedprox" and "dp_sgd" in parts:
            raise ValueError("federation.strategy=fedprox with dp_sgd: the proximal term is not wired into "
                             "DP-SGD's per-example loss")
        central = "central_dp_server" in parts or "central_dp_client" in parts
        if central and d.noise_multiplier <= 0:
            raise ValueError("defense.noise_multiplier must be positive for central DP (the "
                             "accountant needs noise)")
        if d.clipping == "adaptive":
            if not central:
                raise ValueError("defense.clipping=adaptive applies to central_dp_server or "
                                 "central_dp_client only")
            count_std = d.clipped_count_stddev or n / 20
            if d.noise_multiplier >= 2 * count_std:
                raise ValueError(f"defense.noise_multiplier={d.noise_multiplier} must be below 2 x "
                                 f"defense.clipped_count_stddev (= {count_std:g}) for adaptive "
                                 "clipping: raise defense.clipped_count_stddev")
        # Krum scores each upload by its n - f - 2 nearest others (Flower's select_multikrum);
        # its guarantee needs n >= 2f + 3, but the paper's N = 4 with f = 1 still ranks
        if "robust" in parts and d.aggregator in ("krum", "multikrum") and n < d.byzantine + 3:
            raise ValueError(f"defense.byzantine={d.byzantine}: Krum needs federation.participants >= "
                             f"byzantine + 3, not {n}")
        if "robust" in parts and d.aggregator == "trimmed_mean" and int(d.trim_beta * n) == 0:
            raise ValueError(f"defense.trim_beta={d.trim_beta} trims nobody among {n} participants")
        if "secagg" in parts:
            if n < 3:
                raise ValueError("defense.name=secagg needs at least 3 participants")
            if (isinstance(d.secagg_shares, int) and isinstance(d.secagg_threshold, int)
                    and d.secagg_threshold >= d.secagg_shares):
                raise ValueError("defense.secagg_threshold must be below defense.secagg_shares")
            if isinstance(d.secagg_threshold, float) and d.secagg_threshold > 1:
                raise ValueError("defense.secagg_threshold as a fraction must be at most 1")

    def attack_epochs(self) -> list[int]:
        """Rounds whose snapshots the attacks use (1-based); default: the paper's epochs
        40, 60, 80, 90, 100 of 100 scaled to ``federation.rounds`` (rounded, at least 1)."""
        if self.attack.epochs:
            return sorted(set(self.attack.epochs))
        r = self.federation.rounds
        return sorted({max(1, math.floor(f * r + 0.5)) for f in PAPER_EPOCH_FRACTIONS})

    def isolate_rounds(self) -> list[int]:
        """Rounds in which an isolating aggregator cuts the victim off (see
        ``attack.isolate_rounds`` / ``attack.isolate_from``)."""
        if self.attack.isolate_rounds:
            return sorted(set(self.attack.isolate_rounds))
        start = self.attack.isolate_from or self.attack_epochs()[0]
        return list(range(start, self.federation.rounds + 1))

    def victims(self) -> list[int]:
        """The participants the active attacks target, one federation each."""
        v = self.attack.victims
        if v == "target":
            return [self.attack.target_participant]
        return list(range(self.federation.participants)) if v == "all" else sorted(set(v))

    def for_victim(self, victim: int) -> "Config":
        """This config with ``attack.target_participant = victim``."""
        return self.model_copy(update={"attack": self.attack.model_copy(
            update={"target_participant": victim})})

    def ascent_rounds(self, local: bool = False) -> list[int]:
        """Rounds in which an active attacker pushes (see ``attack.ascent_rounds``)."""
        if self.attack.ascent_rounds:
            return sorted(set(self.attack.ascent_rounds))
        epochs = self.attack_epochs()
        return sorted({e - 1 for e in epochs if e > 1}) if local else epochs


# ---------------------------------------------------------------- loading


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    msg = msg.removeprefix("Value error, ")
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{loc}: {msg}{more}" if loc != "config" else f"{msg}{more}"


MAX_YAML_DEPTH = 32           # configs are a few levels deep; 20,000 levels ran Python out of stack
MAX_CONFIG_BYTES = 1 << 20    # a config is a few kB; anything larger is not one


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, mark=None):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _ConfigLoader(yaml.SafeLoader):
    """Safe YAML, stricter for configs: no aliases (five nested aliases expanded a config
    into megabytes), nesting bounded, a key given twice in one mapping refused (YAML keeps
    the last one silently)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _Refused("YAML aliases (*name) are not accepted in a config", self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _Refused(f"nested more than {MAX_YAML_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                continue
            if duplicate:
                raise _Refused(f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(text: str, source: str) -> Any:
    """Parse ``text`` with the config loader; ConfigError naming ``source`` (and the line)."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 -- a SafeLoader subclass
    except _Refused as e:
        where = f" at line {e.problem_mark.line + 1}" if e.problem_mark else ""
        raise ConfigError(f"{source}: {e.problem}{where}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}: YAML does not parse{where}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse one ``key.sub=value`` override; the value is read as YAML (so lists work)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p.isidentifier() for p in key.split(".")):
        raise ConfigError(f"--set {item!r}: malformed key {key!r}")
    try:
        value = read_yaml(raw, f"--set {key}") if raw.strip() else ""
    except ConfigError as e:
        if "does not parse" in str(e):
            raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML") from None
        raise
    return key.split("."), value


def _apply(tree: dict, path: list[str], value: Any, item: str) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {part} is not a section")
        node = child
    node[path[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Load a YAML config (None: the packaged default) and apply ``key=value`` overrides."""
    if path is None:
        text = resources.files("fl_sim").joinpath("configs/default.yaml").read_text()
        source = "packaged default"
    else:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        if p.is_dir():
            raise ConfigError(f"config {p} is a directory; give a YAML file")
        if not p.is_file():  # a FIFO or a device would block or never end
            raise ConfigError(f"config {p} is not a regular file")
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config {p} is larger than {MAX_CONFIG_BYTES >> 20} MiB; not a config")
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read config {p}: {getattr(e, 'strerror', None) or e}") from None
        source = str(p)
    tree = read_yaml(text, source) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections")
    given: list[list[str]] = []
    for item in overrides:
        keys, value = parse_override(item)
        for other in given:  # the same key twice, or a section and a key inside it
            if keys[:len(other)] == other or other[:len(keys)] == keys:
                raise ConfigError(f"--set {'.'.join(keys)} is given twice (or inside --set "
                                  f"{'.'.join(other)}); give each key once")
        given.append(keys)
        _apply(tree, keys, value, item)
    return config_from_dict(tree, source)


def config_from_dict(tree: dict, source: str = "config") -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(f"{source}: {_format_validation_error(e)}") from None


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
