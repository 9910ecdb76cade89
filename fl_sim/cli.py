"""The ``fl-sim`` command line.

fl-sim run [CONFIG] [--set key=value ...] [--out DIR] [--overwrite] [--resume RUN_DIR]
fl-sim compare [CONFIG] --attacks LIST --seeds K [--sweep KEY=V1,V2,...] [--out DIR]
fl-sim attack RUN_DIR [--set attack.key=value ...] [--epochs LIST ...]
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
    r.add_argument("--no-progress", action="store_true")

    c = sub.add_parser("compare", help="passive vs active attacks over seeds (Table X)")
    c.add_argument("config", nargs="?")
    c.add_argument("--attacks", required=True, help="comma-separated attack names")
    c.add_argument("--seeds", type=int, default=3)
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--out", required=False)
    c.add_argument("--epoch-sets", action="append", default=[], metavar="LIST",
                   help="also re-attack each seed with these epochs, e.g. 10,20,30 "
                        "(repeat; tabulated in table_epochs.md, Table XII)")
    c.add_argument("--keep-snapshots", choices=("all", "passive"), default="all",
                   help="passive: delete the active federations' snapshots once a seed is "
                        "attacked (results stay; saves ~0.6 GB a federation on Location-30)")
    c.add_argument("--sweep", metavar="KEY=V1,V2,...",
                   help="repeat the comparison for each value of one config key (e.g. "
                        "attack.gamma=0.001,0.01); writes sweep.md/.csv/.png")
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("--no-progress", action="store_true")

    a = sub.add_parser("attack", help="attack a finished run's snapshots again")
    a.add_argument("run_dir")
    a.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    a.add_argument("--epochs", action="append", default=[],
                   help="comma-separated rounds; repeat to compare epoch sets (Table XII)")
    a.add_argument("--out", help="where to write the table (default RUN_DIR/reattack-*.md)")

    v = sub.add_parser("validate", help="check a config without running it")
    v.add_argument("config")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    d = sub.add_parser("datasets", help="list datasets and whether their files were found")
    d.add_argument("--root", help="data root (default: $FL_SIM_DATA_ROOT or ./data)")
    return p


def _cmd_run(args) -> int:
    from fl_sim.config import load_config
    from fl_sim.experiment import run_experiment
    from fl_sim.report import summary_lines, verdict

    if args.resume:
        if args.config or args.overrides:
            raise FlSimError("--resume takes the run directory's own config; "
                             "drop CONFIG and --set")
        results = run_experiment(None, args.resume, resume=True, progress=not args.no_progress)
        out = args.resume
    else:
        from fl_sim.rundir import default_run_dir

        cfg = load_config(args.config, args.overrides)
        out = Path(args.out or cfg.output.dir or default_run_dir(cfg.data.name, cfg.model.name))
        results = run_experiment(cfg, out, overwrite=args.overwrite,
                                 progress=not args.no_progress)
    for line in summary_lines(results):
        print(line)
    print(f"run directory: {out}")
    if (v := verdict(results["attacks"])) is not None:
        print(v)
    return 0


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
    epoch_sets = [_epoch_list(es) for es in args.epoch_sets]
    for es in epoch_sets:
        bad = [e for e in es if not 1 <= e <= cfg.federation.rounds]
        if bad:
            raise FlSimError(f"--epoch-sets: rounds {bad} outside 1..{cfg.federation.rounds}")
    if args.sweep:
        from fl_sim.sweep import run_sweep

        if epoch_sets:
            raise FlSimError("--sweep and --epoch-sets: give one of them")
        out = run_sweep(cfg, args.sweep, args.seeds, args.out, overwrite=args.overwrite,
                        progress=not args.no_progress, keep_snapshots=args.keep_snapshots)
        print((out / "sweep.md").read_text())
        print(f"written: {out / 'sweep.md'}, {out / 'sweep.csv'}, {out / 'sweep.png'}")
        return 0
    out = run_compare(cfg, args.seeds, args.out, overwrite=args.overwrite,
                      progress=not args.no_progress, epoch_sets=epoch_sets,
                      keep_snapshots=args.keep_snapshots)
    print((out / "table.md").read_text())
    if epoch_sets:
        print((out / "table_epochs.md").read_text())
    print(f"written: {out / 'table.md'}, {out / 'table.csv'}")
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


COMMANDS = {"run": _cmd_run, "compare": _cmd_compare, "attack": _cmd_attack,
            "validate": _cmd_validate, "datasets": _cmd_datasets}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FlSimError as e:
        print(f"fl-sim: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
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
