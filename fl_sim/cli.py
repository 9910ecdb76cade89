"""The ``fl-sim`` command line.

fl-sim run [CONFIG] [--set key=value ...] [--out DIR] [--overwrite] [--resume RUN_DIR]
fl-sim compare [CONFIG] --attacks LIST --seeds K [--sweep KEY=V1,V2,... | --defenses LIST] [--out DIR]
fl-sim attack RUN_DIR [--set attack.key=value ...] [--epochs LIST ...]
fl-sim report RUN_DIR
fl-sim validate CONFIG
fl-sim datasets [--root DIR]

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


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fl-sim", description="Membership-inference audits of simulated "
                "federated learning (Flower + Ray).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="run one experiment")
    r.add_argument("config", nargs="?", help="YAML config (default: the packaged default)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--out", help="run directory (default: output.dir or runs/<stamp>-...)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run")
    _quiet_flags(r)

    c = sub.add_parser("compare", help="passive vs active attacks over seeds (Table X)")
    c.add_argument("config", nargs="?")
    c.add_argument("--attacks", required=True, help="comma-separated attack names")
    c.add_argument("--seeds", type=int, default=3)
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--out", required=False)
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
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("--resume", action="store_true",
                   help="continue a killed comparison in --out with the same command: complete "
                        "seeds are kept, a killed one resumes, the rest run")
    _quiet_flags(c)

    a = sub.add_parser("attack", help="attack a finished run's snapshots again")
    a.add_argument("run_dir")
    a.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    a.add_argument("--epochs", action="append", default=[],
                   help="comma-separated rounds; repeat to compare epoch sets (Table XII)")
    a.add_argument("--out", help="where to write the table (default RUN_DIR/reattack-*.md)")

    rp = sub.add_parser("report", help="rebuild report.md / report.html and the figures of a run "
                        "or comparison directory from its saved results (no retraining)")
    rp.add_argument("run_dir")

    v = sub.add_parser("validate", help="check a config without running it")
    v.add_argument("config")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    d = sub.add_parser("datasets", help="list datasets and whether their files were found")
    d.add_argument("--root", help="data root (default: $FL_SIM_DATA_ROOT or ./data)")
    return p


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
        epochs = [int(e) for e in text.split(",") if e.strip()]
    except ValueError:
        raise FlSimError(f"epochs {text!r}: expected comma-separated round numbers") from None
    if not epochs:
        raise FlSimError(f"epochs {text!r}: empty")
    return epochs


def _cmd_compare(args) -> int:
    from fl_sim.compare import run_compare
    from fl_sim.config import load_config

    names = [n.strip() for n in args.attacks.split(",") if n.strip()]
    cfg = load_config(args.config, args.overrides + [f"attack.names={json.dumps(names)}"])
    if args.seeds < 1:
        raise FlSimError(f"--seeds {args.seeds}: must be at least 1")
    if args.resume and not args.out:
        raise FlSimError("--resume: give the comparison's --out")
    epoch_sets = [_epoch_list(es) for es in args.epoch_sets]
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
    from fl_sim.target import check_names

    cfg = load_config(args.config, args.overrides)
    check_names(cfg)
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


COMMANDS = {"run": _cmd_run, "compare": _cmd_compare, "attack": _cmd_attack, "report": _cmd_report,
            "validate": _cmd_validate, "datasets": _cmd_datasets}


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
