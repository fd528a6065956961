"""Choose HASTE settings on training images only: accuracy and conv MACs saved per setting on the
bundled Fashion-MNIST ResNet-18, never looking at the test set.

    python benchmarks/haste_select.py [--images 1000] [--seed 0] [--name haste_select]

The bundled model was trained on all 60,000 training images (converters/train_fashion_resnet.py),
so no image is truly held out: the last N training images are the selection set. Their dense
top-1 is close to the test set's (93.40 % on the last 1,000, results/haste_select.md, vs 91.98 %), so a
setting's drop measured there is the figure used to choose; the chosen settings are then measured
on all 10,000 test images by haste_sweep.py. Grid (grid()): P in {2, 4}, L network-wide and per
stage (layer1..layer4 of the ResNet). Writes results/<name>.md and .json.

    python benchmarks/haste_select.py --groups late late_margin --images 5000 --pick 0.8

applies a rule instead ("most conv MACs saved with a mean drop <= 0.8 points over --seeds"; pick()).
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np

from common import header, write_results

import haste_edge
from haste_edge.datasets import load_fashion_mnist
from haste_edge.haste import HasteConfig
from haste_edge.haste.method import Haste
from haste_edge.preprocess import normalise

STAGES = ("layer1", "layer2", "layer3", "layer4")


def stage_overrides(model, Ls, Ps=(None,) * 4) -> dict:
    """{conv name: {"L": L of its stage[, "P": P of its stage]}} for the ResNet's four stages; a
    stage whose L is None gets no override."""
    out = {}
    for node in model.graph.nodes:
        if node.op == "Conv":
            for stage, L, P in zip(STAGES, Ls, Ps):
                if f"/{stage}/" in node.name and L is not None:
                    out[node.name] = {"L": L} if P is None else {"L": L, "P": P}
    return out


def evaluate(model, x, y, batch):
    """(top-1, conv MACs saved without, with overhead)."""
    name, out = model.input_names[0], model.output_names[0]
    correct, dense, exe, over = 0, 0, 0, 0
    for i in range(0, len(x), batch):
        logits = model.run({name: x[i:i + batch]})[out]
        st = model.last_stats()
        correct += int((logits.argmax(1) == y[i:i + batch]).sum())
        dense += st.dense(("Conv",)).sum()
        exe += st.executed(("Conv",)).sum()
        over += st.overhead(("Conv",)).sum()
    return correct / len(x), 1 - exe / dense, 1 - (exe + over) / dense


GROUPS = ("network", "stages", "start", "late", "late_margin", "wholemap")


def grid(model, seed: int, groups=GROUPS):
    """(label, HasteConfig) of every setting tried: network-wide L around where the drop reaches
    1 point (README's earlier sweeps); per-stage L, finer early, coarser late; and the late stages
    alone (start: the first compressed conv, counted over all convs), where HASTE costs least time."""
    if "network" in groups:
        for P, Ls in ((2, (11, 12, 13, 14)), (4, (10, 11, 12, 13))):
            for L in Ls:
                yield f"L={L},P={P}", HasteConfig(L=L, patch=P, seed=seed)
    if "stages" in groups:
        for P, Ls in [(2, (14, 12, 12, 8)), (2, (14, 12, 11, 8)), (2, (13, 12, 11, 8)), (2, (13, 11, 10, 8)),
                      (2, (12, 11, 10, 6)), (4, (13, 11, 10, 8)), (4, (12, 11, 10, 8)), (4, (12, 10, 9, 6))]:
            yield (f"P={P} stages L={'-'.join(map(str, Ls))}",
                   HasteConfig(L=12, patch=P, seed=seed, per_layer=stage_overrides(model, Ls)))
    late = []
    if "late" in groups:             # P=2 with the 256-channel stage merged harder (it tolerated L=4 at P=4)
        late += [(14, 12, 12, 8), (14, 12, 12, 6), (14, 12, 12, 5), (14, 12, 12, 4), (15, 13, 12, 5),
                 (15, 13, 13, 4), (14, 13, 12, 5), (13, 12, 12, 5), (14, 12, 11, 5)]
    if "late_margin" in groups:      # more conservative neighbours of "late", for a rule with a margin
        late += [(15, 13, 13, 5), (16, 14, 13, 4), (15, 14, 13, 4), (16, 14, 14, 4), (16, 14, 13, 5)]
    for Ls in late:
        yield (f"P=2 stages L={'-'.join(map(str, Ls))}",
               HasteConfig(L=12, patch=2, seed=seed, per_layer=stage_overrides(model, Ls)))
    if "start" in groups:
        for L, start in ((4, 15), (5, 15), (6, 15), (8, 15), (8, 10), (10, 10)):
            yield f"L={L},P=4,start={start}", HasteConfig(L=L, patch=4, seed=seed, start_layer=start)
    if "wholemap" in groups:         # stage 3 (7x7 maps) with one bucket set per map (P=8), stage 4 as `fast`
        for L3, L4 in ((4, 4), (5, 4), (6, 4), (7, 4), (8, 4), (9, 4), (10, 4), (11, 4), (12, 4)):
            yield (f"start=10, stage 3 L={L3},P=8, stage 4 L={L4},P=4",
                   HasteConfig(L=L4, patch=4, seed=seed, start_layer=10,
                               per_layer=stage_overrides(model, (None, None, L3, L4), (None, None, 8, 4))))


def pick(model, x, labels, dense_acc, args):
    """The rule "most conv MACs saved with a mean selection drop <= DROP over the seeds", applied
    without evaluating every setting: the grid's settings in descending order of MACs saved (seed 0,
    on the first 200 selection images: the saved fraction hardly depends on the images), each on
    all selection images with every seed, stopping at the first whose mean drop is <= DROP."""
    order = []
    for label, cfg in grid(model, 0, args.groups):
        model.compress(Haste(cfg))
        order.append((evaluate(model, x[:200], labels[:200], args.batch)[1], label))
    order.sort(reverse=True)
    print("order: " + ", ".join(f"{label} ({saved:.3f})" for saved, label in order), flush=True)
    rows, chosen = [], None
    for _, label in order:
        runs = []
        for seed in args.seeds:
            cfg = dict(grid(model, seed, args.groups))[label]
            model.compress(Haste(cfg))
            acc, saved, saved_o = evaluate(model, x, labels, args.batch)
            runs.append({"seed": seed, "acc": acc, "drop_pp": (dense_acc - acc) * 100, "saved": saved,
                         "saved_overhead": saved_o})
        drop = float(np.mean([r["drop_pp"] for r in runs]))
        rows.append({"setting": label, "drop_pp": drop, "saved": float(np.mean([r["saved"] for r in runs])),
                     "saved_overhead": float(np.mean([r["saved_overhead"] for r in runs])), "runs": runs,
                     "per_layer": cfg.per_layer, "P": cfg.patch, "L": cfg.L})
        per_seed = ", ".join(f"{r['drop_pp']:.2f}" for r in runs)
        print(f"{label}: mean drop {drop:.2f} ({per_seed}), "
              f"saved {rows[-1]['saved']:.3f} ({rows[-1]['saved_overhead']:.3f})", flush=True)
        if drop <= args.pick:
            chosen = label
            break
    lines = [f"# HASTE setting picked on the last {args.images} training images (selection set), seeds "
             f"{' '.join(map(str, args.seeds))}", "", header(), "",
             f"dense top-1 on these images: {dense_acc:.2%}. Rule: the most conv MACs saved with a mean drop "
             f"<= {args.pick} points (pick()); groups {' '.join(args.groups)}. Chosen: **{chosen}**", "",
             "| setting (in the order evaluated) | mean drop (pp) | drop per seed | conv MACs saved | saved incl. overhead |",
             "|---|---|---|---|---|"]
    for r in rows:
        per_seed = ", ".join(f"{v['drop_pp']:.2f}" for v in r["runs"])
        lines.append(f"| {r['setting']} | {r['drop_pp']:.2f} | {per_seed} | "
                     f"{r['saved']:.1%} | {r['saved_overhead']:.1%} |")
    write_results(args.name, lines, {"dense_acc": dense_acc, "images": args.images, "seeds": args.seeds,
                                     "rule_drop": args.pick, "chosen": chosen, "order": order, "rows": rows})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000, help="the last N training images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--groups", nargs="+", choices=GROUPS, default=list(GROUPS))
    ap.add_argument("--name", default="haste_select")
    ap.add_argument("--pick", type=float, default=None, metavar="DROP",
                    help="apply the rule instead of tabulating one seed: see pick()")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="with --pick")
    args = ap.parse_args()
    haste_edge.set_threads(args.threads)
    model = haste_edge.load()
    images, labels = load_fashion_mnist("train")
    images, labels = images[-args.images:], labels[-args.images:]
    x = np.stack([normalise(im.astype(np.float32), model.meta["input"]) for im in images])
    dense_acc = evaluate(model, x, labels, args.batch)[0]
    print(f"dense {dense_acc:.4f}", flush=True)
    if args.pick is not None:
        return pick(model, x, labels, dense_acc, args)
    rows = []
    for label, cfg in grid(model, args.seed, args.groups):
        model.compress(Haste(cfg))
        acc, saved, saved_o = evaluate(model, x, labels, args.batch)
        rows.append({"setting": label, "acc": acc, "drop_pp": (dense_acc - acc) * 100, "saved": saved,
                     "saved_overhead": saved_o, "config": {"L": cfg.L, "P": cfg.patch, "strided": cfg.include_strided,
                                                           "per_layer": cfg.per_layer}})
        print(f"{label}: acc {acc:.4f} drop {rows[-1]['drop_pp']:.2f} saved {saved:.3f} ({saved_o:.3f})", flush=True)
    lines = [f"# HASTE settings on the last {args.images} training images (selection set), seed {args.seed}", "",
             header(), "", f"dense top-1 on these images: {dense_acc:.2%}", "",
             "| setting | top-1 | drop (pp) | conv MACs saved | saved incl. overhead |", "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["saved"]):
        lines.append(f"| {r['setting']} | {r['acc']:.2%} | {r['drop_pp']:.2f} | {r['saved']:.1%} | "
                     f"{r['saved_overhead']:.1%} |")
    write_results(args.name, lines, {"dense_acc": dense_acc, "images": args.images, "seed": args.seed, "rows": rows})


if __name__ == "__main__":
    main()
