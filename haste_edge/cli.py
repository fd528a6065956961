"""`haste-edge` command line: each command is a few calls into the library."""
from __future__ import annotations

import argparse
import os
import sys
import time
from importlib import metadata
from pathlib import Path

import numba
import numpy as np

from . import DEFAULT_MODEL, __version__, bundled_models, get_threads, load, sample_images, set_threads
from .datasets import FASHION_MNIST_DIR
from .errors import HasteEdgeError, InputError
from .preprocess import assumed_spec, load_batch, softmax


def _labels(model, n):
    labels = model.meta.get("labels")
    if labels and len(labels) != n and model.meta.get("labels_file"):
        raise InputError(f"{model.meta['labels_file']}: {len(labels)} labels, but the model has {n} classes")
    return labels if labels and len(labels) == n else [f"class {i}" for i in range(n)]


def _fmt_macs(m: float) -> str:
    return f"{m / 1e9:.3f} GMAC" if m >= 1e8 else f"{m / 1e6:.2f} MMAC"


def _floats(option, text, n_channels):
    try:
        values = [float(t) for t in text.split(",")]
    except ValueError:
        raise InputError(f"{option} {text}: expected numbers separated by commas") from None
    if len(values) not in (1, n_channels):
        count = "1 value (the model input has 1 channel)" if n_channels == 1 else \
            f"1 or {n_channels} values (the model input has {n_channels} channels)"
        raise InputError(f"{option} {text}: give {count}")
    return values


def _read_labels(path) -> list[str]:
    try:
        labels = [t.strip() for t in Path(path).read_text().splitlines() if t.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the labels file ({_one_line(e)})") from None
    if not labels:
        raise InputError(f"{path}: the labels file is empty (one class name per line)")
    return labels


def _input_spec(model, args) -> dict:
    """The model's preprocessing, or one assumed from its input shape; --size, --mean, --std and
    --labels override. Says what was assumed, on stderr, so the results on stdout stay clean."""
    stored = model.meta.get("input")
    spec = dict(stored) if stored else assumed_spec(model.input_shape(1))
    n_channels = model.input_shape(1)[1]
    if args.size:
        try:
            hw = [int(t) for t in args.size.replace("x", ",").split(",")]
        except ValueError:
            hw = []
        if len(hw) not in (1, 2) or min(hw) < 1:
            raise InputError(f"--size {args.size}: expected H,W or one number (pixels)")
        spec.pop("resize", None), spec.pop("crop", None)
        spec["size"] = hw * 2 if len(hw) == 1 else hw
    if args.mean or args.std:  # replace the normalisation: pixels in [0,1], then (x - mean) / std
        spec["scale"] = 1 / 255
        spec["mean"] = _floats("--mean", args.mean, n_channels) if args.mean else [0.0]
        spec["std"] = _floats("--std", args.std, n_channels) if args.std else [1.0]
        if min(spec["std"]) <= 0:
            raise InputError(f"--std {args.std}: must be > 0")
    if args.labels:
        model.meta["labels"] = _read_labels(args.labels)
        model.meta["labels_file"] = args.labels
    if not stored:
        h, w = spec["size"]
        labels = "labels from " + args.labels if args.labels else "classes numbered (no --labels)"
        print(f"haste-edge: note: {model.path} stores no preprocessing; assumed {spec['mode']} {h}x{w} "
              f"(images resized to it), pixels scaled by {spec['scale']:.6g}, mean {spec['mean']}, "
              f"std {spec['std']}, {labels}; set with --size, --mean, --std, --labels", file=sys.stderr)
    return spec


def _load(args):
    model = load(args.model)
    if getattr(args, "haste", None) and getattr(args, "httm", None):
        raise InputError("--haste and --httm: one compression method at a time")
    if getattr(args, "haste", None):
        model.set_haste(args.haste)
    if getattr(args, "httm", None):
        if not model.set_httm(args.httm):
            raise InputError(f"--httm: {model.path} has no attention layer to merge tokens in "
                             f"(ScaledDotProductAttention nodes after `start`)")
    return model


def _mac_report(model) -> str:
    st = model.last_stats().summary()
    if not model.compressed:
        return f"dense MACs: {_fmt_macs(st['dense_macs'])} per image"
    if model.compression_name == "prom":
        from .prom.method import totals
        m = {k: f"{v / 1e6:.2f} M" for k, v in totals(model.last_stats()).items()}
        return (f"dense MACs: {_fmt_macs(st['dense_macs'])} per image; PROM's {len(model.compressed)} layers did "
                f"{m['int8_mults']} int8 multiplications, {m['int32_adds']} int32 additions, {m['fp32_mults']} fp32 "
                f"multiplications (scales, quantisation) and {m['fp32_adds']} fp32 additions (biases) per image")
    if model.compression_name == "httm":
        from .httm.method import attention_summary
        a = attention_summary(model.last_stats())
        return (f"dense MACs: {_fmt_macs(st['dense_macs'])}, executed: {_fmt_macs(st['executed_macs'])} "
                f"+ {_fmt_macs(st['overhead_ops'])} HTTM matching and merging ops per image (mean); attention "
                f"layers: {_fmt_macs(a['dense_macs'])} dense -> {_fmt_macs(a['executed_macs'])} executed, "
                f"{a['queries_kept']:.1%} of queries and {a['keys_kept']:.1%} of keys kept; HTTM on "
                f"{len(model.compressed)} attention layers")
    return (f"dense MACs: {_fmt_macs(st['dense_macs'])}, executed: {_fmt_macs(st['executed_macs'])} "
            f"+ {_fmt_macs(st['overhead_ops'])} HASTE overhead ops per image (mean); "
            f"saved {st['reduction']:.1%} without overhead, {st['reduction_with_overhead']:.1%} with it "
            f"(conv layers: {st['conv_reduction']:.1%} / {st['conv_reduction_with_overhead']:.1%}); "
            f"HASTE on {len(model.compressed)} convs")


def cmd_classify(args):
    model = _load(args)
    images = args.images or [str(p) for p in sample_images()[:1]]
    x = load_batch(images, _input_spec(model, args))
    name = model.input_names[0]
    model.run({name: x})  # warm: the first call compiles kernels and plans buffers
    times = []
    for _ in range(max(1, args.runs)):
        t0 = time.perf_counter()
        logits = model.run({name: x})[model.output_names[0]]
        times.append((time.perf_counter() - t0) * 1e3)
    ms = float(np.median(times))
    probs = softmax(logits.reshape(len(images), -1))
    labels = _labels(model, probs.shape[1])
    for path, p in zip(images, probs):
        top = np.argsort(-p)[: args.top]
        print(f"{path}:")
        for k in top:
            print(f"  {p[k]:7.2%}  {labels[k]}")
    print(f"latency: {ms:.2f} ms for {len(images)} image(s) ({ms / len(images):.2f} ms/image; "
          f"median of {len(times)} runs after a warm-up, min {min(times):.2f} ms)")
    print(_mac_report(model))


def cmd_info(args):
    model = load(args.model)
    rows = model.layers(batch=1)
    w = max(len(r["name"]) for r in rows)
    print(f"model: {model.path}  inputs: {model.graph.inputs}  outputs: {model.output_names}")
    print(f"{'layer':<{w}}  {'op':<18} {'output shape':<20} {'params':>10} {'MACs':>14} {'bits':>4} {'bytes':>10}")
    for r in rows:
        bits = str(r["weight_bits"]) if r["weight_bits"] else ""
        print(f"{r['name']:<{w}}  {r['op']:<18} {str(r['output_shape']):<20} {r['params']:>10,} {r['macs']:>14,} "
              f"{bits:>4} {r['weight_bytes']:>10,}")
    params = sum(int(v.size) for v in model.graph.weights.values())
    print(f"total: {len(rows)} layers, {params:,} parameters, {sum(r['macs'] for r in rows):,} dense MACs per image, "
          f"weights {sum(r['weight_bytes'] for r in rows):,} bytes as stored (bits: of the layer's weight "
          f"matrix, PROM's ternary codes 2, int8 codes 8, float 32; bytes include scales and biases)")
    shapes = {name: model.input_shape(1, name) for name in model.input_names}
    mem = (f"memory: weights {sum(v.nbytes for v in model.graph.weights.values()) / 2 ** 20:.2f} MiB; "
           f"activation buffers {model.plan(shapes).arena_bytes / 2 ** 20:.2f} MiB per image")
    if args.memory:      # what the kernels derive is made on the first run: one inference
        model.run({name: np.zeros(shape, np.float32) for name, shape in shapes.items()})
        mem += (f"; kernel state (packed weights, HASTE set-up) {model.kernel_state_bytes() / 2 ** 20:.2f} MiB "
                f"on {get_threads()} thread(s)")
    print(mem)


def cmd_convert(args):
    from . import modelfile
    try:
        from converters.onnx_import import import_onnx
    except ImportError as e:  # a device install (pip --no-deps) has no onnx
        raise InputError(f"convert needs the onnx package ({_one_line(e)}): install the 'convert' extra, "
                         f"pip install 'haste-edge[convert]', or convert on the host") from None
    graph = import_onnx(args.onnx)
    kind = "float16" if args.fp16 else "float32"
    if args.prom or args.int8:
        from converters.prom import quantize_graph
        graph = quantize_graph(graph, _calibration(args, graph), "prom" if args.prom else "int8",
                               args.ternary_threshold)
        q = graph.meta["quantization"]
        kind = f"{q['ternary_layers']} ternary and {q['int8_layers']} int8 layers"
    out = Path(args.output) if args.output else Path(args.onnx).with_suffix(modelfile.SUFFIX)
    modelfile.save(graph, out, fp16=args.fp16)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {len(graph.nodes)} nodes, {kind})")


def _calibration(args, graph) -> np.ndarray:
    """The calibration inputs of --calib: a .npy of preprocessed inputs (N, C, H, W), or a folder of
    images preprocessed as the model's meta says."""
    if args.calib is None:
        raise InputError("--prom and --int8 need --calib FOLDER (images like the model's inputs) or FILE.npy")
    path = Path(args.calib)
    want = tuple(d for d in next(iter(graph.inputs.values()))[1:])
    if path.is_file() and path.suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise InputError(f"{path}: not a readable .npy array ({e})") from None
        if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want or not np.issubdtype(x.dtype, np.floating):
            raise InputError(f"{path}: calibration inputs must be float (N, {', '.join(map(str, want))}), "
                             f"got {x.dtype} {x.shape}")
        if not np.isfinite(x).all():
            raise InputError(f"{path}: calibration inputs hold NaN or infinity")
        return x.astype(np.float32)
    if not path.is_dir():
        raise InputError(f"{path}: --calib must be a folder of images or a .npy file")
    images = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"))
    if not images:
        raise InputError(f"{path}: no images (.png, .jpg, .jpeg, .bmp, .webp) for calibration")
    if "input" not in graph.meta:
        raise InputError(f"{args.onnx}: no preprocessing known (a <model>.json beside it); give --calib FILE.npy")
    return load_batch(images[:1000], graph.meta["input"])


def _progress(done, total, correct, t0):
    rate = done / max(time.perf_counter() - t0, 1e-9)
    bar = "#" * int(30 * done / total)
    sys.stderr.write(f"\r[{bar:<30}] {done}/{total}  acc {correct / max(done, 1):.2%}  {rate:.0f} img/s")
    sys.stderr.flush()


def _labeled_folder(folder: Path, labels: list[str]):
    """FOLDER/<class name or index>/<image>: the usual image-folder layout."""
    items = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name in labels:
            y = labels.index(sub.name)
        elif sub.name.isdigit():
            y = int(sub.name)
        else:
            raise InputError(f"{sub}: folder name is neither a class label nor an index")
        items += [(p, y) for p in sorted(sub.iterdir()) if p.is_file()]
    if not items:
        raise InputError(f"{folder}: no images found in class subfolders")
    return items


def cmd_profile(args):
    """Per-layer time and MACs, like benchmark_model's op profile, sorted by time."""
    model = _load(args)
    name = model.input_names[0]
    if args.input:
        x = load_batch([args.input], _input_spec(model, args))
    else:
        x = np.random.default_rng(0).standard_normal(model.input_shape(1)).astype(np.float32)
    model.run({name: x})  # compile and plan
    plan = model.last_plan
    plan.timings.clear()
    for _ in range(args.runs):
        model.run({name: x}, profile=True)
    rows = {r.name: r for r in model.last_stats().layers}
    total = sum(plan.timings.values())
    w = max(len(k) for k in plan.timings)
    print(f"{'layer':<{w}}  {'op':<18} {'ms':>8} {'share':>6} {'cum.':>6} {'dense MAC':>12} {'executed MAC':>13} "
          f"{'GMAC/s':>7}")
    ops = {st.node_name: st.op for st in plan.steps}
    cum = 0.0
    for k, t in sorted(plan.timings.items(), key=lambda kv: -kv[1]):
        ms = t / args.runs * 1e3
        cum += t
        r = rows.get(k)
        dense = int(r.dense.mean()) if r else 0
        exe = int(r.executed.mean()) if r else 0
        rate = f"{exe / (ms * 1e6):7.1f}" if exe else " " * 7
        print(f"{k:<{w}}  {ops[k]:<18} {ms:8.3f} {t / total:6.1%} {cum / total:6.1%} {dense:>12,} {exe:>13,} {rate}")
    by_op = {}
    for k, t in plan.timings.items():
        n, s = by_op.get(ops[k], (0, 0.0))
        by_op[ops[k]] = (n + 1, s + t)
    print("by op type: " + ", ".join(f"{op} x{n} {s / args.runs * 1e3:.3f} ms ({s / total:.1%})"
                                     for op, (n, s) in sorted(by_op.items(), key=lambda kv: -kv[1][1])))
    print(f"total {total / args.runs * 1e3:.3f} ms per inference over {args.runs} runs (profiled; "
          f"per-layer timing adds a little overhead)")
    print(_mac_report(model))


def _check_fashion_mnist(root):
    names = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    missing = [n for n in names if not (Path(root) / n).is_file()]
    if missing:
        raise InputError(f"Fashion-MNIST test set not found in {root} (no {missing[0]}): install it with "
                         f"`sudo apt install dataset-fashion-mnist`, or download the four *-ubyte.gz files from "
                         f"github.com/zalandoresearch/fashion-mnist into a folder and pass --fashion-mnist DIR")


def cmd_eval(args):
    model = _load(args)
    spec = _input_spec(model, args)
    name = model.input_names[0]
    if args.folder:
        items = _labeled_folder(Path(args.folder), model.meta.get("labels", []))[: args.limit or None]

        def batches():
            for i in range(0, len(items), args.batch):
                chunk = items[i:i + args.batch]
                yield load_batch([p for p, _ in chunk], spec), np.array([y for _, y in chunk])
        total = len(items)
    else:
        from .datasets import load_fashion_mnist
        from .preprocess import frame_views, normalise
        _check_fashion_mnist(args.fashion_mnist or FASHION_MNIST_DIR)
        images, labels = load_fashion_mnist("test", root=args.fashion_mnist)
        if args.limit:
            images, labels = images[: args.limit], labels[: args.limit]

        def batches():
            for i in range(0, len(images), args.batch):
                x = frame_views(np.stack([normalise(im.astype(np.float32), spec)
                                          for im in images[i:i + args.batch]]), spec)
                yield x, labels[i:i + args.batch]
        total = len(images)
    correct = done = 0
    macs = np.zeros(3)  # dense, executed, overhead summed over images
    t0 = time.perf_counter()
    for x, y in batches():
        logits = model.run({name: x})[model.output_names[0]]
        st = model.last_stats()
        macs += [st.dense().sum(), st.executed().sum(), st.overhead().sum()]
        correct += int((logits.argmax(axis=1) == y).sum())
        done += len(y)
        _progress(done, total, correct, t0)
    sys.stderr.write("\n")
    print(f"accuracy: {correct / done:.4f} ({correct}/{done}) in {time.perf_counter() - t0:.1f} s")
    if model.compression_name == "prom":
        print(_mac_report(model))           # PROM's counts do not depend on the input
    elif model.compressed:
        dense, exe, over = macs / done
        print(f"MACs per image: dense {_fmt_macs(dense)}, executed {_fmt_macs(exe)}, overhead {_fmt_macs(over)}; "
              f"saved {1 - exe / dense:.1%} without overhead, {1 - (exe + over) / dense:.1%} with it")


def cmd_bench(args):
    """Every figure of one benchmark (see haste_edge/bench); exits 130 after Ctrl-C, figures printed."""
    from .bench.report import compare, format_report, read_result, write_json
    from .bench.run import BenchOptions, run_bench
    if args.compare:
        a, b = args.compare
        print(compare(read_result(a), read_result(b), a, b))
        return 0
    if (args.runs is not None and args.runs < 1) or (args.seconds is not None and args.seconds <= 0):
        raise InputError("--runs must be >= 1 and --seconds > 0")
    if args.warmup < 0:
        raise InputError("--warmup must be >= 0")
    # --runs and --seconds exclude each other; neither: 100 runs
    opts = BenchOptions(runs=None if args.seconds is not None else (args.runs or 100), seconds=args.seconds,
                        warmup=args.warmup, input=args.input, idle_seconds=args.idle_seconds)
    result = run_bench(args.model, args.haste, opts, httm=args.httm)
    print(format_report(result))
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 130 if result["interrupted"] else 0


def cmd_warmup(args):
    from .bench.warmup import format_warmup, run_warmup
    res = run_warmup(args.model, args.haste, args.threads, cold=args.cold,
                     progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_warmup(res))


HTTM_HELP = ("merge tokens in attention per head (HTTM), e.g. q=0.5,kv=0.3 (kept fractions of queries and "
             "keys/values; ns patches x nt frames per matching block, outliers fraction kept unmerged, "
             "mode=head|uniform, start first merged layer), or a named setting: fast")

HASTE_HELP = ("run convs with HASTE, e.g. L=12,P=4 (keys: L hyperplanes, P tile size, s sparsity, seed, "
              "start first compressed conv, 1x1 on/off, strided on/off, Lout L per output-channel count as "
              "32:15/64:14), or a named setting: fast, "
              "fewest-macs, auto (fast only on convs where this machine's cost model says it pays), "
              "auto:SPEC (SPEC there)")

DESCRIPTION = """\
Run a CNN classifier on the CPU, with or without HASTE channel merging, and measure it.
With no model given, every command uses the bundled Fashion-MNIST ResNet-18."""

EPILOG = """\
examples:
  haste-edge classify                            classify a bundled test image
  haste-edge classify photo.png --top 5          your own image
  haste-edge classify --model net.onnx img.jpg   an ONNX model, fed as onnxruntime users do
  haste-edge classify --haste L=12,P=4 img.png   with HASTE: executed MACs and savings
  haste-edge info --model net.haste              layers, shapes, parameters, MACs
  haste-edge convert net.onnx -o net.haste       the file to copy to the device
  haste-edge eval                                accuracy on the Fashion-MNIST test set
  haste-edge bench --json run.json               latency, memory, MACs, energy

Run `haste-edge COMMAND --help` for the options of a command."""


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(low):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{v} is less than {low}")
        return v
    parse.__name__ = f"integer >= {low}"
    return parse


_positive = _int_at_least(1)
_THREADS_HELP = ("threads for the kernels (default: all cores; at most the core count); the BLAS gets them "
                 "only while other programs leave the cores idle, else one")
_MODEL_HELP = (f"a .haste or .onnx model file, or a bundled model's name ({', '.join(bundled_models())}; "
               f"default: {DEFAULT_MODEL.stem})")


def _add_model(parser, positional=False):
    """-m/--model on every command; the older positional form still works where it existed."""
    parser.add_argument("-m", "--model", default=None, metavar="MODEL", help=_MODEL_HELP)
    if positional:
        parser.add_argument("model_pos", nargs="?", default=None, metavar="MODEL", help=argparse.SUPPRESS)


def _add_preprocess(parser):
    g = parser.add_argument_group("preprocessing for a model without a <model>.json (e.g. a plain .onnx)")
    g.add_argument("--size", default=None, metavar="H,W", help="input image size (default: the model's input)")
    g.add_argument("--mean", default=None, metavar="M[,M,M]",
                   help="per-channel mean subtracted from pixels scaled to [0,1] (default 0)")
    g.add_argument("--std", default=None, metavar="S[,S,S]",
                   help="per-channel standard deviation dividing them (default 1)")
    g.add_argument("--labels", default=None, metavar="FILE", help="class names, one per line")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="haste-edge", description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument("--threads", type=_positive, default=None, metavar="N", help=_THREADS_HELP)
    p.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("classify", help="classify images (default: the bundled model and image)")
    c.add_argument("images", nargs="*", help="image files (default: a bundled test image)")
    _add_model(c)
    c.add_argument("--top", type=_positive, default=3, help="labels shown per image (default 3)")
    c.add_argument("--runs", type=_positive, default=5, help="timed runs; the median is reported (default 5)")
    c.add_argument("--haste", default=None, metavar="SPEC", help=HASTE_HELP)
    c.add_argument("--httm", default=None, metavar="SPEC", help=HTTM_HELP)
    _add_preprocess(c)
    c.set_defaults(func=cmd_classify)

    f = sub.add_parser("profile", help="per-layer time, dense and executed MACs, sorted by time")
    _add_model(f, positional=True)
    f.add_argument("--haste", default=None, metavar="SPEC", help=HASTE_HELP)
    f.add_argument("--httm", default=None, metavar="SPEC", help=HTTM_HELP)
    f.add_argument("--input", default=None, metavar="IMAGE", help="an image (default: random input)")
    f.add_argument("--runs", type=_positive, default=20, help="profiled runs averaged (default 20)")
    _add_preprocess(f)
    f.set_defaults(func=cmd_profile)

    b = sub.add_parser("bench", help="start-up, latency, memory, MACs and energy per inference")
    _add_model(b, positional=True)
    b.add_argument("--haste", default=None, metavar="SPEC", help=HASTE_HELP)
    b.add_argument("--httm", default=None, metavar="SPEC", help=HTTM_HELP)
    n = b.add_mutually_exclusive_group()
    n.add_argument("--runs", type=int, default=None, help="timed runs (default 100)")
    n.add_argument("--seconds", type=float, default=None, help="time runs for this long instead")
    b.add_argument("--warmup", type=int, default=5, help="untimed runs before the timed ones (default 5)")
    b.add_argument("--input", default=None, metavar="IMAGE|FOLDER|random|samples",
                   help="inputs, cycled (default: the bundled sample images if the model has preprocessing)")
    b.add_argument("--idle-seconds", type=float, default=2.0,
                   help="idle window measured and subtracted where a power meter exists (default 2)")
    b.add_argument("--json", default=None, metavar="FILE", help="also write every figure to FILE")
    b.add_argument("--threads", type=_positive, default=argparse.SUPPRESS, metavar="N",
                   help="same as the global --threads")
    b.add_argument("--compare", nargs=2, default=None, metavar=("A.json", "B.json"),
                   help="print two result files side by side with ratios, then exit")
    b.set_defaults(func=cmd_bench)

    w = sub.add_parser("warmup", help="fill the Numba cache for every kernel a model needs; start times")
    _add_model(w, positional=True)
    w.add_argument("--haste", default=None, metavar="SPEC", help="also warm this setting (every HASTE "
                   "kernel is warmed anyway)")
    w.add_argument("--cold", action="store_true", help="also time a start with an empty cache "
                   "(compiles everything once more)")
    w.add_argument("--threads", type=_positive, default=argparse.SUPPRESS, metavar="N",
                   help="same as the global --threads")
    w.set_defaults(func=cmd_warmup)

    i = sub.add_parser("info", help="layers, shapes, parameters and dense MACs")
    _add_model(i, positional=True)
    i.add_argument("--memory", action="store_true",
                   help="also the kernels' state (packed weights ...): runs one inference, compiling kernels "
                        "the cache lacks")
    i.set_defaults(func=cmd_info)

    v = sub.add_parser("convert", help="convert an .onnx model to the deployable .haste file (needs onnx)")
    v.add_argument("onnx", metavar="MODEL.onnx", help="the ONNX model (a <model>.json beside it is stored too)")
    v.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="the .haste file to write (default: MODEL.haste beside the ONNX file)")
    v.add_argument("--fp16", action="store_true", help="store weights as float16 (half the size)")
    q = v.add_mutually_exclusive_group()
    q.add_argument("--prom", action="store_true",
                   help="PROM: 1x1 conv weights ternary (2 bits), other weights int8, activations int8 (needs --calib)")
    q.add_argument("--int8", action="store_true", help="all conv/gemm weights and activations int8 (needs --calib)")
    v.add_argument("--calib", default=None, metavar="FOLDER|FILE.npy",
                   help="calibration inputs for --prom/--int8: images (at most 1000 used) or preprocessed arrays")
    v.add_argument("--ternary-threshold", type=float, default=0.7, metavar="R",
                   help="--prom: weights with |w| <= R * mean|w| of their output channel become 0 (default 0.7)")
    v.set_defaults(func=cmd_convert)

    e = sub.add_parser("eval", help="accuracy on a labeled folder or the Fashion-MNIST test set")
    e.add_argument("folder", nargs="?", default=None, help="FOLDER/<label>/<image> (default: Fashion-MNIST)")
    _add_model(e)
    e.add_argument("--fashion-mnist", default=None, metavar="DIR",
                   help=f"folder of the Fashion-MNIST idx files (default: {FASHION_MNIST_DIR})")
    e.add_argument("--limit", type=_int_at_least(0), default=0, help="use only the first N images (0: all)")
    e.add_argument("--batch", type=_positive, default=50, help="images per inference (default 50)")
    e.add_argument("--haste", default=None, metavar="SPEC", help=HASTE_HELP)
    e.add_argument("--httm", default=None, metavar="SPEC", help=HTTM_HELP)
    _add_preprocess(e)
    e.set_defaults(func=cmd_eval)
    return p


def _version() -> str:
    try:
        return metadata.version("haste-edge")
    except metadata.PackageNotFoundError:  # run from a source tree, not installed
        return __version__


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _check_threads(n):
    if n is not None and n > numba.config.NUMBA_NUM_THREADS:
        raise InputError(f"--threads {n}: at most {numba.config.NUMBA_NUM_THREADS} on this machine")


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors: already printed
        return e.code or 0
    if getattr(args, "model_pos", None):
        if args.model:
            print("haste-edge: error: the model is given twice (use -m/--model)", file=sys.stderr)
            return 2
        args.model = args.model_pos
    try:
        _check_threads(args.threads)
        set_threads(args.threads)
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
    except KeyboardInterrupt:
        print("haste-edge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as Python's documentation recommends.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:
        if args.traceback or os.environ.get("HASTE_EDGE_TRACEBACK"):
            raise
        if isinstance(e, (HasteEdgeError, OSError, ValueError)):  # the library's words for bad input
            print(f"haste-edge: error: {_one_line(e)}", file=sys.stderr)
        else:
            print(f"haste-edge: error: unexpected {type(e).__name__}: {_one_line(e)} "
                  f"(run with --traceback for the details)", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
