"""Malformed input: one line on stderr naming the problem, exit status 2, no traceback,
and no run directory that looks complete."""

import gzip

from fl_sim.cli import main
from tests.conftest import REPO


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


# ---------------------------------------------------------------- safe by default
# Each case: argv, a fragment of the one stderr line, paths that must still exist afterwards
# (what fl-sim did not create and must not delete), paths that must not exist (nothing made).

def _safety_cases(tmp, home, work):
    import os

    import torch

    dup_keys = _write(tmp / "dup.yaml", "federation:\n  rounds: 3\n  rounds: 4\n")
    dup_sections = _write(tmp / "dup2.yaml", "seed: 1\nfederation: {rounds: 2}\nseed: 2\n")
    deep = _write(tmp / "deep.yaml", "data: " + "[" * 20000 + "]" * 20000 + "\n")
    deep_map = _write(tmp / "deepmap.yaml", "".join("  " * i + f"k{i}:\n" for i in range(40)) + "  " * 40 + "v: 1\n")
    bomb = _write(tmp / "bomb.yaml", 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
                  + "".join(f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
                            for p, c in zip("abcd", "bcde")) + "data: {options: {subset: *e}}\n")
    alias = _write(tmp / "alias.yaml", "attack: {epochs: &e [2]}\nfederation: {fail: {2: *e}}\n")
    a_dir = tmp / "config-dir.yaml"
    a_dir.mkdir()
    fifo = tmp / "fifo.yaml"
    os.mkfifo(fifo)
    big = _write(tmp / "big.yaml", "# " + "x" * (1 << 20) + "\n")
    regular = _write(tmp / "a-regular-file", "mine\n")
    stranger = tmp / "not-a-run"
    _write(stranger / "thesis.tex", "mine\n")
    link_target = tmp / "link-target"
    _write(link_target / "keep.txt", "mine\n")
    link = tmp / "a-link"
    link.symlink_to(link_target, target_is_directory=True)
    _write(home / "notes.txt", "mine\n")
    _write(work / "paper.md", "mine\n")
    cmp = tmp / "cmp"
    _write(cmp / "seed-0" / "precious.csv", "mine\n")  # a seed directory fl-sim cannot read
    _write(cmp / ".fl-sim-run", "{}\n")
    results_empty = _write(tmp / "rep1" / "results.json", "{}\n")
    _write(tmp / "rep2" / "compare.json", "{")
    _write(tmp / "rep3" / "compare.json", '{"seeds": ["../../elsewhere"], "attacks": []}\n')
    _write(tmp / "rep4" / "results.json", '{"dataset": "d", "model": "m", "seed": 0, "target": {}, '
                                          '"attacks": 5}\n')
    sw = tmp / "sw"
    ga = ["compare", "--attacks", "global_gradient_ascent", "--out", str(sw)]
    gp = ["compare", "--attacks", "global_passive", "--out", str(sw)]
    nocuda = not torch.cuda.is_available()
    cases = [
        # YAML: parse errors, nesting, aliases, duplicate keys, size, not a file
        (["run", str(dup_keys)], "given twice", [], []),
        (["run", str(dup_sections)], "given twice", [], []),
        (["run", str(deep)], "nested", [], []),
        (["run", str(deep_map)], "nested", [], []),
        (["run", str(bomb)], "aliases", [], []),
        (["validate", str(alias)], "aliases", [], []),
        (["run", str(a_dir)], "directory", [a_dir], []),
        (["run", str(fifo)], "regular file", [fifo], []),
        (["run", str(big)], "larger than", [], []),
        (["run", "--set", "attack.epochs=*x"], "YAML", [], []),
        # seeds numpy and torch cannot take
        (["run", "--set", "seed=-1"], "seed", [], []),
        (["run", "--set", "seed=99999999999999999999999"], "seed", [], []),
        (["run", "--set", "seed=abc"], "seed", [], []),
        (["compare", "--attacks", "global_passive", "--set", "seed=4294967295", "--seeds", "2",
          "--out", str(sw)], "last seed", [], [sw]),
        # empty or duplicate lists, parameters, values
        (["run", "--set", "attack.epochs=[]"], "attack.epochs", [], []),
        (["run", "--set", "attack.epochs=[2,2]"], "twice", [], []),
        (["run", "--set", "attack.victims=[0,0]"], "twice", [], []),
        (["run", "--set", "attack.names=[global_passive,global_passive]"], "twice", [], []),
        (["run", "--set", "attack.ascent_rounds=[]"], "attack.ascent_rounds", [], []),
        (["run", "--set", "federation.keep_rounds=[]"], "keep_rounds", [], []),
        (["run", "--set", "seed=1", "--set", "seed=2"], "given twice", [], []),
        (["run", "--set", "federation={rounds: 2}", "--set", "federation.rounds=3"], "given twice", [], []),
        (["compare", "--attacks", "", "--out", str(sw)], "--attacks", [], [sw]),
        (["compare", "--attacks", "global_passive,,global_isolating", "--out", str(sw)], "--attacks", [], [sw]),
        (gp + ["--defenses", ""], "--defenses", [], [sw]),
        (gp + ["--defenses", "none,,dp_sgd"], "empty entry", [], [sw]),
        (gp + ["--defenses", "none,none"], "twice", [], [sw]),
        (gp + ["--defenses", "dp_sgd:noise_multiplier=1:noise_multiplier=2"], "given twice", [], [sw]),
        (gp + ["--defenses", "dp_sgd:name=secagg"], "name=", [], [sw]),
        (gp + ["--defenses", "dp_sgd:noise_multiplier=[1"], "noise_multiplier", [], [sw]),
        (gp + ["--defenses", "dp_sgd:noise_multiplier=*a"], "noise_multiplier", [], [sw]),
        (ga + ["--sweep", ""], "--sweep", [], [sw]),
        (ga + ["--sweep", "attack.gamma=1e-3,1e-3"], "twice", [], [sw]),
        (ga + ["--sweep", "attack.gamma=1e-3,,1e-2"], "empty value", [], [sw]),
        (ga + ["--sweep", "attack.gamma=[1,"], "attack.gamma", [], [sw]),
        (ga + ["--sweep", "output.dir=a,b"], "output", [], [sw]),
        (gp + ["--epoch-sets", "1,1"], "twice", [], [sw]),
        (gp + ["--epoch-sets", "1,2", "--epoch-sets", "2,1"], "twice", [], [sw]),
        (gp + ["--set", "attack.names=[global_passive]"], "--attacks", [], [sw]),
        # every value of a sweep and every defense setting checked before the first trains
        (ga + ["--sweep", "model.name=fc,vgg99"], "vgg99", [], [sw]),
        (ga + ["--sweep", "data.name=digits,location30", "--set", f"data.root={tmp / 'none'}"], "location30",
         [], [sw]),
        (ga + ["--sweep", "federation.strategy=fedavg,krum", "--set", "federation.participants=3",
               "--set", "attack.victims=[0]"], "krum", [], [sw]),
        (gp + ["--defenses", "none,robust:byzantine=5"], "byzantine", [], [sw]),
        # strategy options: names, types and ranges Flower does not check
        (["run", "--set", "federation.strategy=fedadam", "--set", "federation.strategy_options={eta: abc}"],
         "eta", [], []),
        (["run", "--set", "federation.strategy=fedprox", "--set", "federation.strategy_options={proximal_mu: -1}"],
         "proximal_mu", [], []),
        (["run", "--set", "federation.strategy=krum", "--set", "federation.strategy_options={num_malicious_nodes: 3}"],
         "krum", [], []),
        (["run", "--set", "federation.strategy=fedavgm",
          "--set", "federation.strategy_options={server_momentum: 1.5}"], "server_momentum", [], []),
        (["run", "--set", "federation.strategy=fedavg", "--set", "federation.strategy_options={min_train_nodes: 1}"],
         "set by fl-sim", [], []),
        (["run", "--set", "federation.strategy=multikrum",
          "--set", "federation.strategy_options={num_nodes_to_select: 2.5}"], "integer", [], []),
        (["run", "--set", "federation.strategy=trimmed_mean", "--set", "federation.strategy_options={beta: 0.1}"],
         "trims nobody", [], []),
        # validate checks what run checks before training
        (["validate", str(REPO / "configs" / "default.yaml"), "--set", "federation.strategy_options={eta: 1}"],
         "eta", [], []),
        (["validate", str(REPO / "configs" / "default.yaml"), "--set", "data.name=location30",
          "--set", f"data.root={tmp / 'none'}"], "location30", [], []),
        (["validate", str(REPO / "configs" / "default.yaml"), "--set", "model.name=vgg99"], "vgg99", [], []),
        (["validate", str(REPO / "configs" / "default.yaml"), "--set", "model.name=alexnet"], "widths", [], []),
        (["run", "--set", f"federation.num_cpus={(os.cpu_count() or 1) * 4}"], "num_cpus", [], []),
        # nothing deleted that fl-sim did not create
        (["run", "--out", str(regular)], "is a file", [regular], []),
        (["run", "--out", str(regular), "--overwrite"], "is a file", [regular], []),
        (["run", "--out", str(stranger), "--overwrite"], "not a directory fl-sim created",
         [stranger / "thesis.tex"], []),
        (["run", "--out", str(link), "--overwrite"], "symbolic link", [link, link_target / "keep.txt"], []),
        (["run", "--out", ".", "--overwrite"], "refusing", [work / "paper.md"], []),
        (["run", "--out", "..", "--overwrite"], "refusing", [work / "paper.md"], []),
        (["run", "--out", str(home), "--overwrite"], "refusing", [home / "notes.txt"], []),
        (["compare", "--attacks", "global_passive", "--out", str(work), "--overwrite"], "refusing",
         [work / "paper.md"], []),
        (["compare", "--attacks", "global_passive", "--seeds", "1", "--out", str(cmp), "--resume"],
         "not a run directory", [cmp / "seed-0" / "precious.csv"], []),
        # reports of files that are not fl-sim's
        (["report", str(results_empty.parent)], "not an fl-sim results file", [results_empty], []),
        (["report", str(tmp / "rep2")], "does not parse", [], []),
        (["report", str(tmp / "rep3")], "seeds", [], [tmp / "elsewhere"]),
        (["report", str(tmp / "rep4")], "malformed", [], []),
    ]
    if nocuda:  # refused before the run directory exists
        cases += [(["run", "--set", "federation.device=cuda"], "cuda", [], []),
                  (["validate", str(REPO / "configs" / "default.yaml"), "--set", "federation.device=cuda"],
                   "cuda", [], []),
                  (ga + ["--sweep", "federation.device=cpu,cuda"], "cuda", [], [sw])]
    return cases


def test_bad_input_is_one_line_and_nothing_is_lost(tmp_path, capsys, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "home" / "work"
    work.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    cases = _safety_cases(tmp_path / "cases", home, work)
    # with the older cases above: well over 60, every category of the safety issue
    assert len(cases) + len(_cases(tmp_path / "older")) >= 100
    for argv, fragment, survivors, absent in cases:
        out = tmp_path / "out" / str(abs(hash(tuple(argv))))
        if "--out" not in argv and argv[0] == "run":
            argv = argv + ["--out", str(out)]
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2, (argv, err)
        assert len(lines) == 1 and "Traceback" not in err, (argv, err)
        assert fragment in lines[0], (argv, lines[0])
        assert not out.exists(), (argv, "a refused run left its directory")
        for p in survivors:
            assert p.exists() or p.is_symlink(), (argv, f"{p} was deleted")
        for p in absent:
            assert not p.exists(), (argv, f"{p} was created")
