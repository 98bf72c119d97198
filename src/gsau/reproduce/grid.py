"""The experiment grid: which (model, dataset, seed) cells, in which order, and the worker that
trains them.

The order comes from each preset's catalog entry (`catalog: {group, priority, role}` in its YAML):
group 1 is the paper's headline comparison, trained first so a session that can afford only a
slice gets it; within a group, lower priority first. Presets without a catalog entry (custom
ones) go last.
"""

from __future__ import annotations

import time
from pathlib import Path

from gsau import checkpoint
from gsau.config import Config, preset_info, preset_names, resolve
from gsau.data.interactions import BUNDLED
from gsau.errors import GsauError
from gsau.evaluation import evaluate
from gsau.reproduce.claims import claim, held
from gsau.runs import dataset_label, default_run_dir, resumed_config, run_state, stranded
from gsau.trainer import Trainer, load_run

HEADLINE_GROUP = 1


def catalog_groups() -> dict[int, list[str]]:
    """{group: presets by priority (ties by name)} over the installed presets that have a catalog
    group, in ascending group order."""
    infos = sorted((preset_info(name) for name in preset_names()),
                   key=lambda info: (info["group"], info["priority"], info["name"]))
    groups: dict[int, list[str]] = {}
    for info in infos:
        if info["group"] > 0:  # group 0: no catalog entry, ordered with the custom presets
            groups.setdefault(info["group"], []).append(info["name"])
    return groups


def headline() -> list[str]:
    """The paper's headline comparison (catalog group 1), by priority."""
    return catalog_groups().get(HEADLINE_GROUP, [])


def paper_models() -> list[str]:
    """The reproduction's default models: every preset but those of role "research" (our own
    variants, studied in results/RESEARCH.md rather than reproduced)."""
    return [name for name in preset_names() if preset_info(name)["role"] != "research"]


def proposed() -> list[str]:
    """The presets the paper proposes (catalog role "ours"), in catalog order."""
    return [name for name in preset_names() if preset_info(name)["role"] == "ours"]


def model_order(models: list[str]) -> list[str]:
    """`models` in grid order: catalogued presets by group and priority, then the rest as given."""
    known = [m for group in catalog_groups().values() for m in group]
    return [m for m in known if m in models] + [m for m in models if m not in known]


def grid(models: list[str], datasets: list[str], seeds: list[int]) -> list[tuple[str, str, int]]:
    """(model, dataset, seed) cells in the order they are trained.

    Group by group; within a group the first seed everywhere before the next seed (one seed of
    every important cell beats three seeds of a few), then model-major, datasets as given.
    """
    catalogued = list(catalog_groups().values())
    known = {m for group in catalogued for m in group}
    cells = []
    for group in catalogued + [[m for m in models if m not in known]]:  # custom presets last
        for seed in seeds:
            cells += [(m, d, seed) for m in group if m in models for d in datasets]
    return cells


def plan(models, datasets, seeds, epochs=None, overrides=()) -> list[tuple[tuple[str, str, int], Config]]:
    """Every cell with the config it trains under, resolved up front so a bad --set or dataset fails
    before hours of training rather than after."""
    for d in datasets:
        if d.lower() not in BUNDLED and not Path(d).exists():
            raise GsauError(f"unknown dataset {d!r}: not a bundled name ({', '.join(BUNDLED)}) and no such path")
    return [((m, d, s), resolve(m, None, list(overrides), dataset=d, epochs=epochs, seed=s))
            for m, d, s in grid(models, datasets, seeds)]


def show(out: Path, cells) -> None:
    """--dry-run: each cell's state and holder, and the totals. Reads only."""
    counts = {"done": 0, "resume": 0, "todo": 0, "partial": 0}
    held_by = 0
    for (m, d, s), cfg in cells:
        path = default_run_dir(cfg, out / "runs")
        st = "partial" if stranded(path) else run_state(path)  # epochs without last.pt: skipped, not trained
        counts[st] += 1
        holder = held(path) if st != "done" else None
        held_by += holder is not None
        print(f"{st:<6}  {m:<14} {dataset_label(d):<10} {s}  {path}" + (f"  (held by {holder})" if holder else ""))
    print(f"{len(cells)} runs: {counts['done']} done, {counts['resume']} to resume, {counts['todo']} to train"
          + (f", {counts['partial']} partial (epochs on record, no last.pt to resume)" if counts["partial"] else "")
          + (f"; {held_by} held by other workers" if held_by else ""))


def masked_metrics(path: Path) -> dict:
    """Best weights re-scored with every model masking the user's earlier items, into masked.json."""
    cfg, split, model = load_run(path)
    report = {stage: evaluate(model, split, stage, cfg.train.ks, mask_history=True,
                              batch_size=cfg.train.eval_batch_size) for stage in ("valid", "test")}
    checkpoint.write_json(path / "masked.json", report)
    return report


def work(out: Path, cells, epochs=None, max_runs=None, progress=True) -> None:
    """Train the cells in order: skip finished ones, resume interrupted ones, pass over those another
    worker holds, stop after max_runs trainings."""
    trained = 0
    for i, ((m, d, s), cfg) in enumerate(cells, start=1):
        path = default_run_dir(cfg, out / "runs")
        tag = f"[{i}/{len(cells)}] {m} {dataset_label(d)} seed {s}"
        first_look = run_state(path)
        if first_look == "done" and (path / "masked.json").exists():
            print(f"{tag}: done, skipped")  # no claim needed: a finished run only is read
            continue
        if first_look != "done" and max_runs is not None and trained >= max_runs:
            print(f"stopping after {trained} trainings (--max-runs {max_runs})")
            break
        with claim(path) as mine:
            if not mine:
                print(f"{tag}: held by another worker ({held(path) or 'now released'}), skipped")
                continue
            # Judged only now, under the claim: another worker may have finished it meanwhile.
            if stranded(path):
                print(f"{tag}: skipped, {path} has epochs on record but no checkpoint (last.pt) to resume; "
                      "move it away to train the run afresh")
                continue
            st = run_state(path)
            if st == "done":
                if not (path / "masked.json").exists():  # interrupted between the test and the masked scores
                    print(f"{tag}: done; scoring the masked protocol")
                    masked_metrics(path)
                else:
                    print(f"{tag}: done, skipped")
                continue
            t0 = time.perf_counter()
            if st == "resume":
                # Continue as the run started (its own config.yaml), as `gsau train --resume` does;
                # threads are how this worker runs, not what the run trains.
                cfg = resumed_config(path, {"threads": cfg.train.threads, "epochs": epochs})
                print(f"{tag}: resuming {path}")
            else:
                print(f"{tag}: training -> {path}")
            trainer = Trainer(cfg, path, progress=progress, echo=lambda line: print("  " + line))
            # Only a config and data fingerprint there (stopped inside epoch 1): "resumed" afresh.
            report = trainer.run(resume=st == "resume" or (path / "config.yaml").exists())
            masked = masked_metrics(path)
        trained += 1
        r, mk = report["test"], masked["test"]
        print(f"{tag}: finished in {time.perf_counter() - t0:.0f}s, best epoch {report['best_epoch']} | "
              f"test R@10 {r['recall@10']:.4f} N@10 {r['ndcg@10']:.4f} | "
              f"masked R@10 {mk['recall@10']:.4f} N@10 {mk['ndcg@10']:.4f}")
