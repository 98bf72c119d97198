"""The `gsau` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from gsau import __version__
from gsau.data.interactions import BUNDLED
from gsau.data.readers import FORMATS
from gsau.errors import GsauError


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-user-count", type=int, default=5, metavar="K", help="k-core threshold for users (default 5)")
    p.add_argument("--min-item-count", type=int, default=5, metavar="K", help="k-core threshold for items (default 5)")
    p.add_argument("--dedup", action="store_true", help="keep only the first occurrence of a repeated (user, item) pair")
    p.add_argument("--format", choices=FORMATS, help="input format (default: from the file name)")
    p.add_argument("--columns", metavar="ROLE=COL,...", help="which columns of a CSV/TSV/.inter file hold what, by "
                   "header name or 0-based index: user=userId,item=movieId[,rating=...][,time=timestamp] "
                   "(default: recognised header names, else user,item[,rating],time)")


def _load(args):
    from gsau.data import load_dataset
    return load_dataset(args.dataset, min_user=args.min_user_count, min_item=args.min_item_count,
                        dedup=args.dedup, fmt=args.format, columns=args.columns)


def _columns_line(data) -> str | None:
    used = data.meta.get("columns")
    return "columns        " + ", ".join(f"{role}={col}" for role, col in used.items()) if used else None


def cmd_data_stats(args) -> None:
    from gsau.data import LeaveOneOut
    t0 = time.perf_counter()
    data = _load(args)
    seconds = time.perf_counter() - t0
    lengths = data.lengths
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        split = LeaveOneOut.from_interactions(data, drop_short=args.drop_short)
    stats = {"dataset": data.name, "users": data.n_users, "items": data.n_items,
             "interactions": data.n_interactions,
             "sequence_length": {"min": int(lengths.min()), "median": float(np.median(lengths)), "max": int(lengths.max())},
             "density": data.n_interactions / (data.n_users * data.n_items),
             "split": split.sizes(), "load_seconds": round(seconds, 3), "columns": data.meta.get("columns")}
    if caught:
        stats["warnings"] = [str(w.message) for w in caught]
    if args.json:
        print(json.dumps(stats))
        return
    s = stats["sequence_length"]
    sp = stats["split"]
    print(f"dataset        {data.name}")
    print(f"users          {data.n_users}")
    print(f"items          {data.n_items}")
    print(f"interactions   {data.n_interactions}")
    print(f"seq length     min {s['min']}  median {s['median']:g}  max {s['max']}")
    print(f"density        {stats['density']:.6f}")
    print(f"split          train {sp['train']}  valid {sp['valid']}  test {sp['test']}  (leave-one-out by time)")
    if _columns_line(data):
        print(_columns_line(data))
    print(f"loaded in      {seconds:.2f}s")
    for w in stats.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)


def cmd_data_import(args) -> None:
    t0 = time.perf_counter()
    data = _load(args)
    target = data.save(args.out)
    if _columns_line(data):
        print(_columns_line(data))
    print(f"wrote {target}: {data.n_users} users, {data.n_items} items, {data.n_interactions} interactions "
          f"({time.perf_counter() - t0:.2f}s)")


def cmd_data_synth(args) -> None:
    from gsau.data.synth import synthesize
    t0 = time.perf_counter()
    data = synthesize(args.users, args.items, args.interactions, args.seed, popularity_exponent=args.popularity_exponent,
                      follow=args.follow, name=Path(args.out).name or "synth").data
    target = data.save(args.out)
    print(f"wrote {target}: {data.n_users} users, {data.n_items} items, {data.n_interactions} interactions "
          f"({time.perf_counter() - t0:.2f}s)")


def cmd_models(args) -> None:
    from gsau.config import load_preset, preset_names
    names = preset_names()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {load_preset(name).get('description', '')}")


def cmd_config(args) -> None:
    import yaml
    from gsau.config import resolve
    cfg = resolve(args.model, args.config, args.set)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")


def cmd_train(args) -> None:
    from gsau import runs
    from gsau.config import resolve
    from gsau.trainer import Trainer
    if args.nproc and args.nproc > 1:
        return _launch(args.nproc, args.argv)
    if args.resume:
        out = Path(args.resume)
        recorded = runs.read_config(out)
        # Every option given with --resume either applies (runs.resumable_options) or is refused
        # by name; none is silently dropped.
        refused = [flag for flag, value, now in (("--model", args.model, recorded.preset),
                                                 ("--dataset", args.dataset, recorded.data.dataset))
                   if value is not None and value != now and not (flag == "--dataset" and _same_path(value, now))]
        refused += [flag for flag, value in (("--config", args.config), ("--out", args.out)) if value]
        if refused:
            raise GsauError(f"{out}: --resume continues the run as it was configured; {', '.join(refused)} "
                            f"cannot be given with it (start a new run with another --out instead)")
        changes = {"epochs": args.epochs, "threads": args.threads, "seed": args.seed, "device": args.device}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise GsauError(f"--set expects key=value, got {item!r}")
            changes[key.strip()] = value
        cfg = runs.resumed_config(out, changes)
        return Trainer(cfg, out, progress=not args.quiet, callbacks=_tracking(args, cfg, out)).run(resume=True)
    if not args.model or not args.dataset:
        raise GsauError("train needs --model and --dataset (or --resume DIR)")
    cfg = resolve(args.model, args.config, args.set, dataset=runs.dataset_spec(args.dataset), epochs=args.epochs,
                  seed=args.seed, threads=args.threads, device=args.device)
    out = Path(args.out) if args.out else runs.default_run_dir(cfg)
    if os.environ.get("RANK", "0") == "0":  # one line, not one per process
        print(f"training {cfg.preset} on {cfg.data.dataset} -> {out}")
    Trainer(cfg, out, progress=not args.quiet, callbacks=_tracking(args, cfg, out)).run()


def _launch(nproc: int, argv: list[str]) -> None:
    """`gsau train --nproc N ...`: this same command under torchrun, N processes on this host."""
    import subprocess
    rest, skip = [], False
    for a in argv:  # the same arguments without --nproc N
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    if os.environ.get("WORLD_SIZE"):
        raise GsauError("--nproc inside a torchrun launch: give the number of processes to torchrun only")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "gsau", *rest]
    code = subprocess.call(command)
    if code:
        raise GsauError(f"training with {nproc} processes failed (exit code {code}); see the messages above")


def _same_path(a: str, b: str) -> bool:
    from gsau import runs
    return runs.dataset_spec(a) == runs.dataset_spec(b)


def cmd_evaluate(args) -> None:
    from gsau.evaluation import evaluate
    from gsau.trainer import load_run
    cfg, split, model = load_run(args.run, device=args.device)
    mask = {"auto": None, "yes": True, "no": False}[args.mask_history]
    result = {stage: evaluate(model, split, stage, cfg.train.ks, mask_history=mask,
                              batch_size=cfg.train.eval_batch_size, progress=not args.json)
              for stage in args.stage}
    if args.json:
        print(json.dumps(result))
        return
    for stage, metrics in result.items():
        print(f"{stage}: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


def cmd_bench(args) -> None:
    from gsau import bench
    if args.repeats < 1 or args.steps < 1:
        raise GsauError("gsau bench: --repeats and --steps must be at least 1")
    print(f"gsau bench on {args.dataset}: {args.steps} steps per configuration in each of {args.repeats} rounds, "
          f"{args.threads or 'default'} threads")
    rows = bench.suite(args.dataset, args.steps, args.repeats, args.epochs, args.threads)
    print(bench.table(rows), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def cmd_recommend(args) -> None:
    from gsau.serving import Recommendations
    rec = Recommendations.from_run(args.run, device=args.device)
    for rank, (item, score) in enumerate(rec.top_k(args.user, args.k, exclude_seen=args.exclude_seen), start=1):
        print(f"{rank}\t{item}\t{score:.4f}")


def _tracking(args, cfg, out) -> list:
    from gsau.track import sinks
    return sinks(args.track, cfg, out)


def cmd_serve(args) -> None:
    if not 0 <= args.port <= 65535:
        raise GsauError(f"--port must be in 0..65535 (0: any free port), not {args.port}")
    from gsau import server  # a one-line error naming the extra when FastAPI is missing
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    server.serve(args.run, host=args.host, port=args.port, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                 device=args.device)


def cmd_export(args) -> None:
    from gsau.export import export
    manifest = export(args.run, args.out, fmt=args.format, onnx=args.onnx, faiss=args.faiss, n_check=args.check_users)
    out = Path(args.out)
    print(f"wrote {', '.join(str(out / f) for f in manifest['files'])} and {out / 'manifest.json'}")
    print(f"embeddings: {manifest['users']} users, {manifest['items']} items, {manifest['dim']} dimensions; "
          f"scores = user vector . item vector")
    if "onnx" in manifest:
        o = manifest["onnx"]
        print(f"onnx: onnxruntime's top-10 equals torch's for {o['same_top10']} of {o['checked_users']} users "
              f"(max score difference {o['max_abs_score_diff']:.2g})")
    if "faiss" in manifest:
        f = manifest["faiss"]
        agreement = (f"top-10 equals gsau's for {f['same_top10']} of {f['checked_users']} users" if "same_top10" in f
                     else f"recall@10 of the exact top-10 {f['recall@10_of_exact']:.4f} over {f['checked_users']} users")
        print(f"faiss: {f['index']}: {agreement}")


def cmd_tune(args) -> None:
    from gsau.tune import tune
    best = tune(args.model, args.dataset, args.space, args.trials, out=args.out, storage=args.storage,
                study=args.study, config_file=args.config, overrides=args.set, epochs=args.epochs,
                progress=not args.quiet)
    print(f"best of {best['trials']} trials: trial {best['number']}, valid {best['value']:.4f} "
          f"({', '.join(f'{k}={v}' for k, v in best['params'].items())}) in {best['run_dir']}")
    print(f"wrote {best['config_file']}; retrain it with: gsau train --model {args.model} --dataset {args.dataset} "
          f"--config {best['config_file']}")


def cmd_reproduce(args) -> None:
    from gsau import reproduce
    from gsau.config import preset_names

    def items(text):
        return [x.strip() for x in text.split(",") if x.strip()]
    models = reproduce.model_order(items(args.models) if args.models else reproduce.paper_models())
    try:
        seeds = [int(s) for s in items(args.seeds)]
    except ValueError:
        raise GsauError(f"--seeds expects comma-separated integers, got {args.seeds!r}") from None
    # The report quotes the command; rebuild it from the parsed options so it is the same however invoked.
    # With --report-only the report reads every run on disk, whatever its seed or settings: quoting
    # --seeds, --epochs or --set there would claim the tables came from them.
    trained = "" if args.report_only else (
        f" --seeds {','.join(map(str, seeds))}" + (f" --epochs {args.epochs}" if args.epochs else "")
        + (" --set " + " ".join(args.set) if args.set else ""))
    command = (f"gsau reproduce --datasets {','.join(items(args.datasets))} --models {','.join(models)}"
               f"{trained} --out {args.out}" + (" --report-only" if args.report_only else ""))
    reproduce.reproduce(args.out, models, items(args.datasets), seeds, epochs=args.epochs, overrides=args.set,
                        max_runs=args.max_runs, dry_run=args.dry_run, report_only=args.report_only,
                        progress=not args.quiet, command=command)


def cmd_study(args) -> None:
    from gsau.research import report, study
    spec = study.load_spec(args.spec)
    out = Path(args.out) if args.out else spec.spec.parent
    try:
        questions = {int(q) for q in args.questions.split(",") if q.strip()} if args.questions else None
    except ValueError:
        raise GsauError(f"--questions expects comma-separated numbers, got {args.questions!r}") from None
    # The spec's own report only for the spec's own runs: a trial --out gets its own report.
    own = out.resolve() == spec.spec.parent.resolve()
    target = Path(args.report) if args.report else (spec.report if own else out / "RESEARCH.md")
    command = f"gsau study {args.spec}" + (f" --out {args.out}" if args.out else "")
    if args.report_only:
        report.write_report(spec, out, command, target)
        return
    if own and (args.epochs or args.set) and not args.dry_run:
        raise GsauError("--epochs and --set make trial runs, not the spec's: give them --out DIR of their own")
    threads = args.threads if args.threads is not None else study.default_threads(args.workers)
    planned = study.plan(spec, out, epochs=args.epochs, overrides=args.set, threads=threads, questions=questions,
                         device=args.device)
    runs = study.select(planned, args.runs) if args.runs else planned
    # One deadline for every worker, fixed now (the hidden --deadline hands it on).
    deadline = args.deadline if args.deadline is not None else (
        time.time() + study.parse_duration(args.time_limit) if args.time_limit is not None else None)
    if args.dry_run:
        return study.show(runs, pace_from=planned)
    try:
        if args.workers > 1:
            child = ["study", args.spec, "--out", str(out), "--workers", "1", "--no-report", "--threads", str(threads)]
            child += ["--deadline", repr(deadline)] if deadline is not None else []
            child += (["--epochs", str(args.epochs)] if args.epochs else []) + (["--set", *args.set] if args.set else [])
            child += (["--max-runs", str(args.max_runs)] if args.max_runs is not None else [])
            child += (["--questions", args.questions] if args.questions else []) + (["--quiet"] if args.quiet else [])
            child += (["--device", args.device] if args.device else []) + (["--runs", args.runs] if args.runs else [])
            study.spawn_workers(child, args.workers)
        else:
            study.work(runs, args.max_runs, progress=not args.quiet, deadline=deadline, pace_from=planned)
    finally:
        if not args.no_report:  # also after a failure or Ctrl-C: whatever finished is reported
            report.write_report(spec, out, command, target)


def cmd_plot(args) -> None:
    from gsau.research.plot import plot_run
    print(f"wrote {plot_run(args.run, args.out)}")


def cmd_buckets(args) -> None:
    from gsau.research import buckets
    mine = [buckets.record_of(r) for r in args.runs]
    other = [buckets.record_of(r) for r in args.against] if args.against else None
    rows = buckets.bucket_table(mine, args.metric, against=other, resamples=args.resamples)
    names = ("+".join(Path(r).name for r in args.runs),) + (("+".join(Path(r).name for r in args.against),) if other else ())
    print(buckets.markdown(rows, args.metric, names), end="")


def _grid_args(p: argparse.ArgumentParser, max_runs: str, states: str) -> None:
    """The options every grid of runs takes (`gsau reproduce`, `gsau study`)."""
    p.add_argument("--epochs", type=int, help="maximum epochs per run (default: the preset's, 300)")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override options in every run, e.g. --set batch_size=256 gamma=0.2")
    p.add_argument("--max-runs", type=int, metavar="N", help=max_runs)
    p.add_argument("--dry-run", action="store_true", help=f"print each run's state ({states}) and exit")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from the runs on disk")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _device_arg(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--device", metavar="DEVICE", help=help_text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gsau", description="Graph-Sequential Alignment and Uniformity (GSAU) "
                                     "and its baselines: train, evaluate and recommend.")
    parser.add_argument("--version", action="version", version=f"gsau {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect and import datasets").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("stats", help="counts, sequence lengths, density and split sizes of a dataset",
                        description="DATASET is a bundled name (beauty, sports, toys), a directory made by "
                        "`gsau data import`, or a file: sequence text (.txt), RecBole atomic (.inter), CSV or TSV.")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--drop-short", action="store_true", help="drop users with fewer than 3 interactions (with a warning) instead of failing")
    _data_args(p)
    p.set_defaults(func=cmd_data_stats)
    p = data.add_parser("import", help="process a file into gsau's fast binary form",
                        description="Read FILE, apply k-core filtering and chronological ordering, map ids, and "
                        "write DIR/dataset.npz atomically. Later commands accept DIR as DATASET.")
    p.add_argument("dataset", metavar="FILE")
    p.add_argument("--out", required=True, metavar="DIR")
    _data_args(p)
    p.set_defaults(func=cmd_data_import)
    p = data.add_parser("synth", help="generate a synthetic dataset of any size (scaling tests)",
                        description="Write DIR/dataset.npz: power-law item popularity and user activity, and a "
                        "planted successor pattern a sequential model can learn (gsau/data/synth.py). Later "
                        "commands accept DIR as DATASET.")
    p.add_argument("--users", type=_positive_int, required=True, metavar="U")
    p.add_argument("--items", type=_positive_int, required=True, metavar="I")
    p.add_argument("--interactions", type=_positive_int, required=True, metavar="N",
                   help="at least 5 per user and 1 per item")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--popularity-exponent", type=float, default=1.0, metavar="S",
                   help="Zipf exponent of item popularity (default 1.0)")
    p.add_argument("--follow", type=float, default=0.6, metavar="P",
                   help="probability that an item is the planted successor of the one before (default 0.6)")
    p.set_defaults(func=cmd_data_synth)

    p = sub.add_parser("models", help="list the model presets")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("config", help="print a preset's resolved configuration (every option and its value)")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--config", metavar="YAML", help="YAML file of options applied over the preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one option")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("train", help="train a model preset on a dataset",
                       description="Train with early stopping on validation, then test the best weights. Writes "
                       "config.yaml, log.jsonl, best.pt, last.pt and metrics.json into --out.")
    p.add_argument("--model", help="preset name (see `gsau models`)")
    p.add_argument("--dataset", help="bundled name, imported directory or data file")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/MODEL-DATASET-SEED)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default 300)")
    p.add_argument("--seed", type=int, help="random seed (default 2020)")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    _device_arg(p, "where to train: auto (CUDA when available), cpu, cuda or cuda:N (default: the config's, auto)")
    p.add_argument("--nproc", type=_positive_int, metavar="N",
                   help="train with N processes on this machine (torch.distributed; one per GPU on CUDA, "
                   "gloo on the CPU): the same as `torchrun --nproc-per-node N -m gsau train ...`")
    p.add_argument("--config", metavar="YAML", help="YAML file of options applied over the preset")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override options, e.g. --set gamma=0.2 lr=0.003 (repeatable, as in gsau study)")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted run in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--track", action="append", choices=["tensorboard", "mlflow"],
                   help="also log to TensorBoard (RUN_DIR/tensorboard; pip install 'gsau[track]') or MLflow "
                   "(pip install 'gsau[mlflow]'); log.jsonl stays the record")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="re-score a saved run with full ranking")
    p.add_argument("run", metavar="DIR")
    p.add_argument("--stage", nargs="+", default=["valid", "test"], choices=["valid", "test"])
    p.add_argument("--mask-history", choices=["auto", "yes", "no"], default="auto",
                   help="exclude the user's known items (auto: the model's own protocol)")
    p.add_argument("--json", action="store_true")
    _device_arg(p, "where to score: auto, cpu, cuda or cuda:N (default cpu)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="time training epochs, evaluation and memory of gsau's presets",
                       description="Seconds per training epoch (bounded steps scaled to an epoch, median of "
                       "rounds; a round runs every configuration once, each in a fresh process) for sasrec, gsau-rec and "
                       "lightgcn with gsau's batching and the paper's, plus "
                       "evaluation throughput and peak memory. benchmarks/run.py adds RecBole beside it.")
    p.add_argument("--dataset", default="beauty")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3, help="rounds (the median over them is reported)")
    p.add_argument("--epochs", type=int, default=0, help="also train this many full epochs and report validation NDCG@20")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="write the raw measurements here")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("reproduce", help="train every preset on every dataset and seed, then write RESULTS.md",
                       description="Train the grid of presets x datasets x seeds into OUT/runs (most important "
                       "first; finished runs are skipped, interrupted ones resumed), score each also with history "
                       "masking, and write OUT/results.csv, OUT/RESULTS.md and OUT/curves.png. Several workers "
                       "may share OUT: each run is claimed first, and one held by another worker is passed over.")
    p.add_argument("--datasets", default=",".join(BUNDLED), help=f"comma-separated datasets (default {','.join(BUNDLED)})")
    p.add_argument("--models", help="comma-separated presets (default: all; trained in order of importance)")
    p.add_argument("--seeds", default="2020", help="comma-separated seeds (default 2020)")
    p.add_argument("--out", default="results", metavar="DIR", help="output directory (default results)")
    _grid_args(p, max_runs="stop after N trainings (do the grid in slices)", states="done / resume / todo")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("recommend", help="top-k items for a user of a saved run, in the dataset's own ids")
    p.add_argument("run", metavar="DIR")
    p.add_argument("--user", required=True, help="the user's id as in the data file")
    p.add_argument("-k", type=_positive_int, default=10, help="how many items (default 10)")
    p.add_argument("--exclude-seen", action="store_true", help="leave out items the user already has")
    _device_arg(p, "where to score: auto, cpu, cuda or cuda:N (default cpu)")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("serve", help="serve a finished run over HTTP (FastAPI; pip install 'gsau[serve]')",
                       description="Load RUN_DIR once and answer POST /recommendations (users, or a history of "
                       "items), GET /users/ID/recommendations, GET /items/ID/similar, GET /health and GET /model; "
                       "API documentation at /docs. Concurrent requests are scored together in small batches.")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one, printed)")
    p.add_argument("--max-batch", type=_positive_int, default=64, metavar="N", help="most rows scored in one batch (default 64)")
    p.add_argument("--max-wait-ms", type=float, default=0.0, metavar="MS",
                   help="how long a batch waits for more requests (default 0: requests that arrive while one "
                   "batch is scored form the next)")
    p.add_argument("--threads", type=int, help="torch intra-op threads for scoring")
    _device_arg(p, "where to score: auto, cpu, cuda or cuda:N (default cpu)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="write a finished run's embeddings, ONNX encoder and faiss index",
                       description="Write the user and item vectors the scorer ranks with (scores = user . item) "
                       "with their ids, and optionally the sequence encoder as ONNX and an inner-product faiss "
                       "index, each checked against gsau's own top-10 on sample users. See DIR/manifest.json.")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--format", choices=["npz", "parquet"], default="npz", help="embeddings file format (default npz)")
    p.add_argument("--onnx", action="store_true", help="also the sequence encoder and scorer as ONNX (pip install 'gsau[onnx]')")
    p.add_argument("--faiss", nargs="?", const="flat", choices=["flat", "hnsw"],
                   help="also a faiss item index: flat (exact, the default) or hnsw (pip install 'gsau[ann]')")
    p.add_argument("--check-users", type=_positive_int, default=256, metavar="N", help="users the checks compare on (default 256)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("tune", help="search hyper-parameters with Optuna (pip install 'gsau[tune]')",
                       description="Train trials of MODEL on DATASET with options drawn from --space (a YAML "
                       "file: option: {low: .., high: ..[, log: true]} or a list of values), prune trials whose "
                       "validation metric falls behind, and write the best config to OUT/STUDY/best.yaml. Several "
                       "processes given the same --storage and --study share the trials.")
    p.add_argument("--model", required=True, help="preset name (see `gsau models`)")
    p.add_argument("--dataset", required=True, help="bundled name, imported directory or data file")
    p.add_argument("--space", required=True, metavar="YAML", help="the search space")
    p.add_argument("--trials", required=True, type=_positive_int, metavar="N", help="finished or pruned trials the study should hold")
    p.add_argument("--storage", metavar="URL", help="Optuna storage shared by workers (default sqlite:///OUT/STUDY.db)")
    p.add_argument("--study", metavar="NAME", help="study name (default MODEL-DATASET)")
    p.add_argument("--out", default="tune", metavar="DIR", help="where trial runs go (default tune)")
    p.add_argument("--epochs", type=int, help="maximum epochs per trial")
    p.add_argument("--config", metavar="YAML", help="YAML file of options applied over the preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fix one option in every trial")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("study", help="run the research study of a spec (RESEARCH.md), resuming where it stopped",
                       description="Train the spec's runs in its order (results/study/study.yaml: issue #18's "
                       "questions), skip finished ones, resume interrupted ones, then write the report. Several "
                       "workers share OUT: each run is claimed first, one held by another worker is passed over.")
    p.add_argument("spec", metavar="SPEC", help="the study spec (YAML)")
    p.add_argument("--out", metavar="DIR", help="where the runs go (default: the spec's directory)")
    p.add_argument("--report", metavar="FILE", help="where the report goes (default: the spec's `report` for its "
                   "own runs, else OUT/RESEARCH.md)")
    p.add_argument("--workers", type=_positive_int, default=1, help="train this many runs at once (default 1)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads per run (default: cores / workers)")
    p.add_argument("--questions", metavar="Q,...", help="only the runs of these questions, e.g. 1,4")
    p.add_argument("--runs", metavar="PATTERN,...", help="only the runs whose names match, e.g. 'sasrec-toys-*' "
                   "(with --questions: of those questions)")
    _device_arg(p, "where to train: auto (CUDA when available), cpu, cuda or cuda:N (default: auto); several "
                "workers share one GPU")
    _grid_args(p, max_runs="stop after N trainings per worker", states="done / resume / todo / absent / partial")
    p.add_argument("--time-limit", metavar="DURATION", help="start or resume a run only where its estimate (as "
                   "--dry-run prints it, from finished runs of its kind, or of its kind on other data scaled) ends within "
                   "DURATION of now, e.g. 2h30m; "
                   "a run with no estimate is skipped; for jobs with a wall-clock limit")
    p.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)  # the workers' own
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)  # --time-limit's end, handed to the workers
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("plot", help="draw a run's training dynamics (train.probe fields per epoch)",
                       description="Draw the probe fields a run logged with --set probe=N (alignment, uniformity, "
                       "the two encoders' similarity) and its validation NDCG@20 per epoch. Needs matplotlib.")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--out", metavar="FILE", help="the figure (default RUN_DIR/dynamics.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("buckets", help="test metrics by user history length and target popularity, with CIs",
                       description="Test metrics of finished runs by user history length (<=5, 6-7, 8-12, 13-25, "
                       ">25 interactions) and by target-item popularity (head, torso, tail), with user counts and "
                       "95%% bootstrap intervals; several runs (seeds) are averaged per user; --against compares "
                       "paired, user by user.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--against", nargs="+", metavar="RUN_DIR", help="the other model's runs on the same data")
    p.add_argument("--metric", default="recall@10", help="recall@K, ndcg@K or mrr@K (default recall@10)")
    p.add_argument("--resamples", type=_positive_int, default=1000, help="bootstrap resamples (default 1000)")
    p.set_defaults(func=cmd_buckets)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line, `warning: ...`, without the source location a library user needs
    but a command-line user does not."""
    print(f"warning: {message}", file=sys.stderr)


class _LineFormatter(logging.Formatter):
    def format(self, record) -> str:
        message = record.getMessage()
        return f"warning: {message}" if record.levelno >= logging.WARNING else message


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is when a line is logged (a redirected or captured stdout
    included), not the one that was current when the handler was made."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


@contextlib.contextmanager
def _console():
    """While a command runs, the "gsau" logger's INFO lines (progress, epochs) print as plain lines
    on stdout and Python warnings as one `warning: ...` line; both are put back afterwards, so a
    library user of the same process gets neither (only by adding a handler, a Trainer echo or a
    callback)."""
    logger = logging.getLogger("gsau")
    handler = _StdoutHandler()
    handler.setFormatter(_LineFormatter())
    before = (logger.level, warnings.showwarning)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    warnings.showwarning = _show_warning
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.level, warnings.showwarning = before


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with _console():
            args.func(args)
    except GsauError as e:
        print(f"gsau: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gsau: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`gsau models | head -3`): stop quietly, as Unix tools do, and keep
        # the interpreter's final flush from raising again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
