"""The ``fl-sim`` command line.

fl-sim run [CONFIG] [--set key=value ...] [--out DIR] [--overwrite] [--resume RUN_DIR]
fl-sim compare [CONFIG] --attacks LIST --seeds K [--sweep KEY=V1,V2,... | --defenses LIST] [--out DIR]
fl-sim attack RUN_DIR [--set attack.key=value ...] [--epochs LIST ...]
fl-sim report RUN_DIR
fl-sim validate CONFIG
fl-sim datasets [--root DIR]
fl-sim list attacks|defenses|models|datasets|strategies

Bad input (config, data path, flag) prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from fl_sim.errors import FlSimError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        print(f"fl-sim: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


class _Help(argparse.RawDescriptionHelpFormatter):
    """Each flag's default after its help (unless the help says it, or there is none to
    show); examples (the epilog) kept as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


_SET_HELP = ("override one config key (a YAML value), e.g. --set federation.rounds=20 or "
             "--set 'attack.names=[global_passive]'; repeat for more keys (each key once)")
_CONFIG_HELP = "YAML config; keys left out take their defaults (none: the packaged default)"
_LISTS = ("attacks", "defenses", "models", "datasets", "strategies")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fl-sim")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _sub(sub, name: str, help_: str, examples: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_, description=help_, formatter_class=_Help,
                          epilog="examples:\n" + examples)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fl-sim", description="Membership-inference audits of simulated "
                "federated learning (Flower + Ray).", formatter_class=_Help,
                epilog="examples:\n  fl-sim run\n  fl-sim run configs/location30_fc.yaml --set federation.rounds=40\n"
                       "  fl-sim list attacks\n  fl-sim COMMAND --help")
    p.add_argument("--version", action="version", version=f"fl-sim {_version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    _add_run(sub)
    _add_compare(sub)
    _add_the_rest(sub)
    return p


def _add_run(sub) -> None:
    r = _sub(sub, "run", "run one experiment: train the federations the attacks need, attack, report",
             "  fl-sim run\n  fl-sim run configs/location30_fc.yaml --out runs/loc30\n"
             "  fl-sim run --set 'attack.names=[global_passive,local_passive]' --set seed=3\n"
             "  fl-sim run --resume runs/loc30")
    r.add_argument("config", nargs="?", help=_CONFIG_HELP)
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    r.add_argument("--out", help="run directory (default: output.dir, else runs/<stamp>-<data>-<model>)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace an existing run directory (only one fl-sim created)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its last complete round")
    _quiet_flags(r)


def _add_compare(sub) -> None:
    c = _sub(sub, "compare", "passive against active attacks over seeds (the paper's Table X), a sweep "
             "of one config key, or the defense x attacker matrix",
             "  fl-sim compare configs/location30_fc.yaml --attacks global_passive,global_isolating --seeds 3\n"
             "  fl-sim compare --attacks global_gradient_ascent --sweep attack.gamma=1e-5,1e-3\n"
             "  fl-sim compare --attacks global_passive,local_passive --defenses none,dp_sgd:noise_multiplier=0.5\n"
             "  fl-sim compare ... --out runs/cmp --resume   (the same command, after a kill)")
    c.add_argument("config", nargs="?", help=_CONFIG_HELP)
    c.add_argument("--attacks", required=True, help="comma-separated attack names (fl-sim list attacks)")
    c.add_argument("--seeds", type=int, default=3, help="seeds config.seed, config.seed + 1, ...")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    c.add_argument("--out", required=False, help="comparison directory (default: runs/compare-<stamp>-...)")
    c.add_argument("--epoch-sets", action="append", default=[], metavar="LIST",
                   help="also re-attack each seed with these epochs, e.g. 10,20,30 "
                        "(repeat; tabulated in table_epochs.md, Table XII)")
    c.add_argument("--keep-snapshots", choices=("all", "passive", "none"), default="all",
                   help="passive: delete the active federations' snapshots once a seed is "
                        "attacked (results stay; saves ~0.6 GB a federation on Location-30); "
                        "none: delete every federation's")
    c.add_argument("--sweep", metavar="KEY=V1,V2,...",
                   help="repeat the comparison for each value of one config key (e.g. "
                        "attack.gamma=0.001,0.01); writes sweep.md/.csv/.png")
    c.add_argument("--defenses", metavar="LIST",
                   help="the defense x attacker matrix: comma-separated defense settings, e.g. "
                        "none,dp_sgd:noise_multiplier=0.5,secagg+local_dp; writes defenses.md/.csv, "
                        "privacy_utility.png")
    c.add_argument("--overwrite", action="store_true",
                   help="replace an existing comparison directory (only one fl-sim created)")
    c.add_argument("--resume", action="store_true",
                   help="continue a killed comparison in --out with the same command: complete "
                        "seeds are kept, a killed one resumes, the rest run")
    _quiet_flags(c)


def _add_the_rest(sub) -> None:
    a = _sub(sub, "attack", "attack a finished run's snapshots again with other attack settings "
             "(no retraining)", "  fl-sim attack runs/loc30 --set attack.gradients=matrix\n"
             "  fl-sim attack runs/loc30 --epochs 20,30,40 --epochs 50,60")
    a.add_argument("run_dir", help="a complete run directory")
    a.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an attack.* key")
    a.add_argument("--epochs", action="append", default=[],
                   help="comma-separated rounds; repeat to compare epoch sets (Table XII)")
    a.add_argument("--out", help="where to write the table (default: RUN_DIR/reattack.md)")

    rp = _sub(sub, "report", "rebuild report.md / report.html and the figures of a run or comparison "
              "directory from its saved results (no retraining)", "  fl-sim report runs/loc30")
    rp.add_argument("run_dir", help="a run or comparison directory")

    v = _sub(sub, "validate", "check a config as run would before training (keys, names, strategy "
             "options, device, data files), without running it", "  fl-sim validate configs/location30_fc.yaml")
    v.add_argument("config", help="YAML config")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)

    d = _sub(sub, "datasets", "list datasets and whether their files were found", "  fl-sim datasets --root data")
    d.add_argument("--root", help="data root (default: $FL_SIM_DATA_ROOT, else ./data)")

    ls = _sub(sub, "list", "list what a config can name, one line each", "  fl-sim list attacks")
    ls.add_argument("kind", choices=_LISTS, help="what to list")


def _quiet_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                   help="no progress bars or stage lines (for scripts); warnings and the result "
                        "still print, and every stage still goes to RUN_DIR/run.log")


def _report_failed(error: str | None, out) -> int:
    """Exit status 1 when the run's report could not be written (the numbers are safe)."""
    if error is None:
        return 0
    log = Path(out) / "run.log"
    print(f"fl-sim: error: the report of {out} was not written ({error}); the results are saved"
          f"{f'; see {log}' if log.is_file() else ''}; retry with: fl-sim report {out}", file=sys.stderr)
    return 1


def _cmd_run(args) -> int:
    from fl_sim.config import load_config
    from fl_sim.experiment import run_experiment
    from fl_sim.report import summary_lines, verdict

    if args.resume:
        if args.config or args.overrides:
            raise FlSimError("--resume takes the run directory's own config; "
                             "drop CONFIG and --set")
        results = run_experiment(None, args.resume, resume=True, progress=not args.quiet)
        out = args.resume
    else:
        from fl_sim.rundir import default_run_dir

        cfg = load_config(args.config, args.overrides)
        out = Path(args.out or cfg.output.dir or default_run_dir(cfg.data.name, cfg.model.name))
        results = run_experiment(cfg, out, overwrite=args.overwrite, progress=not args.quiet)
    for line in summary_lines(results):
        print(line)
    print(f"run directory: {out}")
    if (v := verdict(results["attacks"])) is not None:
        print(v)
    if results.get("report_error") is None:
        print(f"report: {Path(out) / 'report.html'}")
    return _report_failed(results.get("report_error"), out)


def _epoch_list(text: str) -> list[int]:
    try:
        epochs = [int(e) for e in text.split(",")]
    except ValueError:
        raise FlSimError(f"epochs {text!r}: expected comma-separated round numbers") from None
    if len(set(epochs)) != len(epochs):
        raise FlSimError(f"epochs {text!r}: a round is given twice")
    return epochs


def _cmd_compare(args) -> int:
    from fl_sim.compare import run_compare
    from fl_sim.config import MAX_SEED, load_config

    names = [n.strip() for n in args.attacks.split(",")]
    if not all(names):
        raise FlSimError(f"--attacks {args.attacks!r}: give attack names separated by single commas")
    if any(o.split("=", 1)[0].strip() == "attack.names" for o in args.overrides):
        raise FlSimError("compare: give the attacks with --attacks, not --set attack.names")
    cfg = load_config(args.config, args.overrides + [f"attack.names={json.dumps(names)}"])
    if args.seeds < 1:
        raise FlSimError(f"--seeds {args.seeds}: must be at least 1")
    if cfg.seed + args.seeds - 1 > MAX_SEED:
        raise FlSimError(f"--seeds {args.seeds} from seed {cfg.seed}: the last seed passes {MAX_SEED}")
    for flag in ("defenses", "sweep"):
        if getattr(args, flag) is not None and not getattr(args, flag).strip():
            raise FlSimError(f"--{flag}: empty; leave the flag out, or give a list")
    if args.resume and not args.out:
        raise FlSimError("--resume: give the comparison's --out")
    epoch_sets = [_epoch_list(es) for es in args.epoch_sets]
    if len({tuple(sorted(es)) for es in epoch_sets}) != len(epoch_sets):
        raise FlSimError("--epoch-sets: the same set is given twice")
    for es in epoch_sets:
        bad = [e for e in es if not 1 <= e <= cfg.federation.rounds]
        if bad:
            raise FlSimError(f"--epoch-sets: rounds {bad} outside 1..{cfg.federation.rounds}")
    if args.defenses:
        from fl_sim.defense_compare import run_defense_compare

        if args.sweep or epoch_sets:
            raise FlSimError("--defenses: give it without --sweep and --epoch-sets")
        out = run_defense_compare(cfg, args.defenses, args.seeds, args.out, overwrite=args.overwrite,
                                  progress=not args.quiet, keep_snapshots=args.keep_snapshots,
                                  resume=args.resume)
        print((out / "defenses.md").read_text())
        print(f"written: {out / 'defenses.md'}, {out / 'defenses.csv'}, {out / 'privacy_utility.png'}")
        return 0
    if args.sweep:
        from fl_sim.sweep import run_sweep

        if epoch_sets:
            raise FlSimError("--sweep and --epoch-sets: give one of them")
        out = run_sweep(cfg, args.sweep, args.seeds, args.out, overwrite=args.overwrite,
                        progress=not args.quiet, keep_snapshots=args.keep_snapshots, resume=args.resume)
        print((out / "sweep.md").read_text())
        print(f"written: {out / 'sweep.md'}, {out / 'sweep.csv'}, {out / 'sweep.png'}")
        return 0
    out = run_compare(cfg, args.seeds, args.out, overwrite=args.overwrite,
                      progress=not args.quiet, epoch_sets=epoch_sets,
                      keep_snapshots=args.keep_snapshots, resume=args.resume)
    print((out / "table.md").read_text())
    if epoch_sets:
        print((out / "table_epochs.md").read_text())
    print(f"written: {out / 'table.md'}, {out / 'table.csv'}")
    return _report_failed(_comparison_report(out), out)


def _comparison_report(out: Path) -> str | None:
    from fl_sim.report import regenerate

    try:
        regenerate(out)
    except Exception as e:  # the tables above are written; the report can be rebuilt
        return f"{type(e).__name__}: {e}"
    print(f"report: {out / 'report.html'}")
    return None


def _cmd_report(args) -> int:
    from fl_sim.report import regenerate

    kind, figures = regenerate(args.run_dir)
    out = Path(args.run_dir)
    print(f"{kind} report: {out / 'report.md'}, {out / 'report.html'} ({len(figures)} figures in "
          f"{out / 'figures'})")
    return 0


def _cmd_attack(args) -> int:
    from fl_sim.experiment import reattack
    from fl_sim.io import write_json
    from fl_sim.report import reattack_table

    rows = []
    epoch_sets = args.epochs or [None]
    for es in epoch_sets:
        overrides = list(args.overrides)
        if es is not None:
            overrides.append(f"attack.epochs={json.dumps(_epoch_list(es))}")
        rows.append(reattack(args.run_dir, overrides))
    text = reattack_table(rows)
    print(text)
    out = Path(args.out) if args.out else Path(args.run_dir) / "reattack.md"
    out.write_text(text + "\n")
    write_json(out.with_suffix(".json"), {"overrides": list(args.overrides), "rows": rows})
    print(f"written: {out} and {out.with_suffix('.json').name} (every metric, ROC points)")
    return 0


def _cmd_validate(args) -> int:
    from fl_sim.config import load_config
    from fl_sim.experiment import preflight

    cfg = load_config(args.config, args.overrides)
    preflight(cfg)  # all that run checks before it trains
    print(f"{args.config}: ok ({cfg.data.name}, {cfg.model.name}, "
          f"{cfg.federation.participants} participants, {cfg.federation.rounds} rounds, "
          f"attacks: {', '.join(cfg.attack.names) or 'none'})")
    return 0


def _cmd_datasets(args) -> int:
    from fl_sim.data import dataset_status, default_data_root

    root = args.root or default_data_root()
    print(f"data root: {root}")
    for s in dataset_status(root):
        mark = "found  " if s["found"] else "missing"
        print(f"  {mark} {s['name']:<16} {s['display_name']}  [{s['path']}]")
    return 0


def _cmd_list(args) -> int:
    from fl_sim import catalog

    if args.kind == "attacks":
        import fl_sim.scenarios  # noqa: F401 -- registers the catalog's attacks

        rows = [(n, f"[{', '.join(catalog.get(n).modes)}] {catalog.get(n).summary}") for n in catalog.names()]
    elif args.kind == "defenses":
        rows = list(catalog.DEFENSES.items())
    elif args.kind == "models":
        from fl_sim.models import model_names, model_options

        rows = [(n, f"options: {', '.join(model_options(n)) or 'none'}") for n in model_names()]
    elif args.kind == "datasets":
        from fl_sim.data import dataset_status

        rows = [(s["name"], s["display_name"]) for s in dataset_status()]
    else:
        from fl_sim.defense import OPTION_RANGES, STRATEGIES

        rows = [(n, f"Flower's {c}") for n, c in STRATEGIES.items()]
        rows.append(("(options)", f"federation.strategy_options may set: {', '.join(OPTION_RANGES)}"))
    width = max(len(n) for n, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {' '.join(str(text).split())}")
    return 0


COMMANDS = {"run": _cmd_run, "compare": _cmd_compare, "attack": _cmd_attack, "report": _cmd_report,
            "validate": _cmd_validate, "datasets": _cmd_datasets, "list": _cmd_list}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FlSimError as e:
        print(f"fl-sim: error: {e}", file=sys.stderr)
        return e.exit_status  # 2, bad input; 1 for a snapshot write that failed (a full disk)
    except KeyboardInterrupt:
        print("fl-sim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head or a closed pager: nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        from fl_sim.federation import FederationError

        if not isinstance(e, FederationError):
            raise
        print(f"fl-sim: error: {e}", file=sys.stderr)
        _exit_now(1)


def _exit_now(code: int) -> None:
    # A crashed Flower simulation can leave its server thread blocked on a round timeout,
    # which would keep the process alive after main returns: leave without waiting for it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
