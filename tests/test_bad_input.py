"""Malformed input: one line on stderr naming the problem, exit status 2, no traceback,
and no run directory that looks complete."""

import gzip

from fl_sim.cli import main


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _cases(tmp):
    bad_yaml = _write(tmp / "bad.yaml", "federation: {rounds: 3\n")
    unknown_key = _write(tmp / "unknown.yaml", "federation:\n  roundz: 3\n")
    not_mapping = _write(tmp / "list.yaml", "- 1\n- 2\n")
    loc = tmp / "data" / "location30"
    _write(loc / "bangkok", '"1",' + ",".join(["0"] * 446) + "\n" + '"2",0,1\n')  # truncated row
    fm = tmp / "fmdata" / "FashionMNIST" / "raw"
    fm.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with gzip.open(fm / name, "wb") as f:
            f.write(b"not an idx file")  # wrong format
    # a path below a regular file cannot be created, even by root (who ignores permissions)
    ro = _write(tmp / "a-file", "")
    return [
        (["run", "--set", "data.name=imagenet"], "data.name"),
        (["run", "--set", "model.name=vgg99"], "model.name"),
        (["run", "--set", "attack.names=[telepathy]"], "telepathy"),
        (["run", "--set", "defense.name=prayer"], "defense.name"),
        (["run", "--set", "federation.rounds=0"], "federation.rounds"),
        (["run", "--set", "federation.participants=-2"], "federation.participants"),
        (["run", "--set", "attack.target_participant=4"], "target_participant"),
        (["run", "--set", "attack.epochs=[41]"], "attack.epochs"),
        (["run", "--set", "attack.gamma=.inf"], "attack.gamma"),
        (["run", "--set", "attack.known_fraction=0"], "attack.known_fraction"),
        (["run", "--set", "federation.finetune_fraction=1.0"], "finetune_fraction"),
        (["run", "--set", "data.name=location30", "--set", f"data.root={tmp / 'none'}"],
         "location30"),
        (["run", "--set", "data.name=location30", "--set", f"data.root={tmp / 'data'}"],
         "location30"),
        (["run", "--set", "data.name=fmnist", "--set", f"data.root={tmp / 'fmdata'}"],
         "fmnist"),
        (["run", str(bad_yaml)], "does not parse"),
        (["run", str(unknown_key)], "unknown key"),
        (["run", str(not_mapping)], "mapping"),
        (["run", str(tmp / "missing.yaml")], "not found"),
        (["run", "--set", "federation.rounds=[1,"], "federation.rounds"),
        (["run", "--set", "=3"], "malformed key"),
        (["run", "--set", "federation.rounds"], "key=value"),
        (["run", "--out", str(ro / "sub")], "not writable"),
        (["run", "--bogus-flag"], "unrecognized"),
        (["validate", str(unknown_key)], "unknown key"),
        (["attack", str(tmp / "no-run")], "not a complete run"),
        (["compare", "--attacks", "global_passive", "--seeds", "0"], "--seeds"),
        (["compare", "--attacks", "global_gradient_ascent", "--sweep", "attack.gamma=a,b",
          "--out", str(tmp / "sw")], "attack.gamma"),
        (["compare", "--attacks", "global_gradient_ascent", "--sweep", "attack.nope=1,2",
          "--out", str(tmp / "sw")], "unknown key"),
        (["compare", "--attacks", "global_gradient_ascent", "--sweep", "attack.gamma=0.1",
          "--out", str(tmp / "sw")], "at least two values"),
        (["compare", "--attacks", "global_gradient_ascent", "--sweep", "gamma=1,2",
          "--out", str(tmp / "sw")], "config key"),
        (["run", "--set", "attack.isolate_rounds=[0]"], "attack.isolate_rounds"),
        (["run", "--set", "attack.victims=[7]"], "attack.victims"),
        (["run", "--resume", str(tmp / "no-run")], "not a run directory"),
        (["run", "--set", "defense.name=central_dp_server", "--set", "defense.noise_multiplier=-1"],
         "defense.noise_multiplier"),
        (["run", "--set", "defense.name=local_dp", "--set", "defense.clipping_norm=0"], "defense.clipping_norm"),
        (["run", "--set", "defense.name=secagg+robust"], "do not compose"),
        (["run", "--set", "defense.name=local_dp", "--set", "defense.clipping=adaptive"], "defense.clipping"),
        (["run", "--set", "defense.name=central_dp_client", "--set", "defense.clipping=adaptive"],
         "defense.clipped_count_stddev"),
        (["compare", "--attacks", "global_passive", "--defenses", "none,secagg+central_dp_server",
          "--out", str(tmp / "sw")], "do not compose"),
        (["compare", "--attacks", "global_passive", "--defenses", "dp_sgd:noise_multiplier=-2",
          "--out", str(tmp / "sw")], "noise_multiplier"),
    ]


def test_each_malformed_input_is_one_clear_line(tmp_path, capsys):
    cases = _cases(tmp_path)
    assert len(cases) >= 15
    for argv, fragment in cases:
        out = tmp_path / "out" / str(abs(hash(tuple(argv))))
        if "--out" not in argv and argv[0] == "run" and "--resume" not in argv:
            argv = argv + ["--out", str(out)]
        try:
            code = main(argv)
        except SystemExit as e:  # argparse errors
            code = e.code
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2, (argv, err)
        assert len(lines) == 1, (argv, err)
        assert fragment in lines[0], (argv, lines[0])
        assert "Traceback" not in err
        assert not (out / "results.json").exists()
    assert not (tmp_path / "sw").exists()  # a refused sweep leaves no directory behind
