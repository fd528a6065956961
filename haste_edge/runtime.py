"""Executes a Graph: a Plan per input shape (shapes inferred, buffers allocated once), run many times.

A Conv whose only reader is a residual Add (optionally followed by a Relu, again its only reader)
runs as one step at the Add's place: the conv, then the add and the Relu in one pass while its
output is in cache (ops.conv's 4th input). The step keeps the conv's name; the Add and Relu are
not steps of their own (per-layer reports fold them into the conv).

Buffers are shared between tensors whose lifetimes do not overlap, so peak memory is a few
activation maps, not the sum of all of them. View ops (Reshape, Flatten, ...) alias their input's
buffer and extend its lifetime.

Replay: a plan's first run records, step by step, the compiled calls that redo it (the ops'
registry `calls`); the next runs make only those, without the per-step Python in between (list
building, lookups, checks), which cost about a tenth of the bundled model's time. A step reading
a graph input (a new array every run) has the run's array put in its calls where they take the
input itself; one that derives arrays from it, or runs a compressed layer whose work depends on its
input (HASTE, HTTM; PROM's does not: compression.py, layer.replay), goes the usual way each time. View
steps on stable buffers are not repeated (their views stay valid). A replay is made again when the thread
count or the thread's scratch buffers change, and dropped when the compressed layers do.

Threads: a Model may be run from several Python threads at once. Each thread gets its own plans
(buffers, counters, timings), so no two runs share a buffer and last_stats() is the calling
thread's; weights are shared, read-only. The runs themselves go one at a time (threads.run_context
says why).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from . import limits, ops
from .compression import check_layers, check_method
from .errors import InputError, ModelFileError
from .graph import Graph, Node
from .scratch import generation
from .shapes import infer_shapes
from .threads import holding, kernel_threads, run_context, run_threads


@dataclass
class Step:
    node_name: str
    op: str
    kernel: object
    attrs: dict
    inputs: list[int]          # slot per input; -1 = absent optional input
    outputs: list[int]
    buffers: list | None       # preallocated outputs, or None for view ops
    macs: int
    layer: object = None       # the compression method's layer when one runs this node (compression.py)


@dataclass
class Plan:
    """Everything needed to run the graph on one set of input shapes."""
    input_shapes: dict[str, tuple]
    shapes: dict[str, tuple]
    steps: list[Step]
    slots: dict[str, int]
    env: list                  # slot -> array (weights pre-filled)
    arena_bytes: int = 0
    timings: dict = field(default_factory=dict)
    last_counters: dict = field(default_factory=dict)  # node name -> a method's counters of the last run
    compression: tuple | None = None   # the Model's (method name, layers) the steps' .layer were set from
    replay: Replay | None = None       # the calls that redo a run (module docstring)
    threads: int = 0                   # the kernels' thread count it was made for (layouts depend on it)


@dataclass
class Replay:
    key: tuple                 # (kernel threads, scratch generation) when recorded
    calls: list                # (function, args) in order; a step run the usual way is (_again, (step, plan))
    steps: list                # the node name of the step each call was recorded from (profilers)


FUSE_RESIDUALS = True     # read when a plan is made (benchmarks and tests compare both)
FUSE_MATMUL_BIASES = True  # likewise


def _fuse_residuals(graph: Graph, shapes: dict) -> list[Node]:
    """graph.nodes with every Conv -> Add [-> Relu] chain (module docstring) as one Conv node at
    the Add's place, inputs (x, W, B or "", residual), attribute residual_activation "Relu" or ""."""
    users: dict[str, list[Node]] = {}
    for n in graph.nodes:
        for x in set(n.inputs):
            if x:
                users.setdefault(x, []).append(n)
    outputs = set(graph.outputs)

    def only_reader(t):
        u = users.get(t, [])
        return u[0] if len(u) == 1 and t not in outputs else None

    replace, drop = {}, set()
    for conv in graph.nodes:
        if conv.op != "Conv" or conv.attrs.get("activation"):
            continue
        y = conv.outputs[0]
        add = only_reader(y)
        if add is None or add.op != "Add" or len(add.inputs) != 2 or id(add) in replace:
            continue
        r = add.inputs[1] if add.inputs[0] == y else add.inputs[0]
        if r == y or shapes.get(r) != shapes[y]:
            continue                                     # a broadcast Add stays an Add
        out, act = add.outputs[0], ""
        relu = only_reader(out)
        if relu is not None and relu.op == "Relu":
            out, act = relu.outputs[0], "Relu"
            drop.add(id(relu))
        bias = conv.inputs[2] if len(conv.inputs) > 2 else ""
        replace[id(add)] = Node("Conv", conv.name, [conv.inputs[0], conv.inputs[1], bias, r], [out],
                                {**conv.attrs, "residual_activation": act})
        drop.add(id(conv))
    return [replace.get(id(n), n) for n in graph.nodes if id(n) not in drop]


def _fuse_matmul_biases(nodes: list[Node], graph: Graph, shapes: dict) -> list[Node]:
    """nodes with every MatMul(x, W) -> Add(., b) as one MatMul(x, W, b) at the Add's place, where W
    and b are weights, b a vector of the output's last size (a Linear layer's bias, as torch exports
    it) and the Add the product's only reader: one step and one pass less per layer."""
    readers: dict[str, list[Node]] = {}
    for n in nodes:
        for x in set(n.inputs):
            if x:
                readers.setdefault(x, []).append(n)
    replace, drop = {}, set()
    for mm in nodes:
        if mm.op != "MatMul" or len(mm.inputs) != 2 or mm.inputs[1] not in graph.weights:
            continue
        y = mm.outputs[0]
        users = readers.get(y, [])
        if len(users) != 1 or y in graph.outputs or users[0].op != "Add" or id(users[0]) in replace:
            continue
        add = users[0]
        b = add.inputs[1] if add.inputs[0] == y else add.inputs[0]
        if b == y or b not in graph.weights or shapes.get(add.outputs[0]) != shapes[y]:
            continue
        bias = graph.weights[b]
        if bias.ndim < 1 or bias.shape[-1] != shapes[y][-1] or bias.size != bias.shape[-1]:
            continue
        replace[id(add)] = Node("MatMul", mm.name, [mm.inputs[0], mm.inputs[1], b], [add.outputs[0]], dict(mm.attrs))
        drop.add(id(mm))
    return [replace.get(id(n), n) for n in nodes if id(n) not in drop]


def _blocked_tensors(nodes: list[Node], graph: Graph, shapes: dict, nchw_nodes=frozenset()) -> dict[str, tuple]:
    """Tensors kept channel-blocked (ops.conv_blocked) -> their physical shape: those a conv that
    runs on that layout writes (ops.conv.blocked_output), or a MaxPool writes from such a tensor,
    and only such convs (as their input or residual), MaxPools and GlobalAveragePool read; a fused
    residual has its conv output's layout, a MaxPool's output its input's. Nodes in nchw_nodes
    (compressed layers) neither write nor read the blocked layout."""
    from .ops.conv import blocked_output
    from .ops.conv_blocked import VL
    capable = {}
    for n in nodes:
        if n.name in nchw_nodes:
            continue
        if n.op == "Conv" and len(n.inputs) > 1 and n.inputs[1] in graph.weights:
            nb = blocked_output(n.attrs, shapes[n.inputs[0]], shapes[n.inputs[1]])
            if nb:
                capable[n.outputs[0]] = nb
        elif n.op == "MaxPool" and n.inputs[0] in capable:
            capable[n.outputs[0]] = capable[n.inputs[0]]
    readers: dict[str, list] = {}
    for n in nodes:
        for i, x in enumerate(n.inputs):
            if x:
                readers.setdefault(x, []).append((n, i))
    outputs = set(graph.outputs)

    def reads_blocked(r, i):
        return r.name not in nchw_nodes and ((r.op in ("Conv", "MaxPool") and r.outputs[0] in capable and i in (0, 3))
                                             or r.op == "GlobalAveragePool")
    blocked = {t for t in capable if t not in outputs and all(reads_blocked(r, i) for r, i in readers.get(t, []))}
    changed = True
    while changed:
        changed = False
        for n in nodes:
            pairs = [(n.inputs[3], n.outputs[0])] if n.op == "Conv" and len(n.inputs) > 3 and n.inputs[3] else []
            if n.op == "MaxPool":
                pairs.append((n.inputs[0], n.outputs[0]))
            for r, y in pairs:
                if (r in blocked) != (y in blocked):
                    blocked -= {r, y}
                    changed = True
    return {t: (shapes[t][0], capable[t], shapes[t][2], shapes[t][3], VL) for t in blocked}


def _last_uses(nodes: list[Node], graph_outputs: list[str]) -> dict[str, int]:
    """Index of the last node reading each tensor, following views back to the buffer they alias."""
    base = {}
    last = {}
    for i, n in enumerate(nodes):
        for x in n.inputs:
            if x:
                last[base.get(x, x)] = i
        if ops.OPS[n.op].view:
            b = base.get(n.inputs[0], n.inputs[0])
            for o in n.outputs:
                base[o] = b
    for o in graph_outputs:
        last[base.get(o, o)] = len(nodes)  # graph outputs live to the end
    return last, base


def build_plan(graph: Graph, input_shapes: dict[str, tuple], blocked: bool = True,
               nchw_nodes=frozenset()) -> Plan:
    """The plan for these input shapes; blocked: keep tensors between convs channel-blocked where
    they can be (_blocked_tensors), except around the nodes in nchw_nodes (compressed layers read
    and write NCHW)."""
    shapes = infer_shapes(graph, input_shapes)
    slots: dict[str, int] = {}
    env: list = []

    def slot_of(name):
        if name not in slots:
            slots[name] = len(env)
            env.append(None)
        return slots[name]

    for name, w in graph.weights.items():
        env[slot_of(name)] = w
    for name in input_shapes:
        slot_of(name)

    nodes = _fuse_residuals(graph, shapes) if FUSE_RESIDUALS else list(graph.nodes)
    if FUSE_MATMUL_BIASES:
        nodes = _fuse_matmul_biases(nodes, graph, shapes)
    physical = _blocked_tensors(nodes, graph, shapes, nchw_nodes) if blocked else {}
    last, base = _last_uses(nodes, graph.outputs)
    free: list[np.ndarray] = []       # flat float32 buffers no tensor holds now
    held: dict[str, np.ndarray] = {}  # tensor -> flat buffer
    arena = 0
    steps = []
    for i, n in enumerate(nodes):
        spec = ops.OPS[n.op]
        buffers = None
        if not spec.view:
            buffers = []
            for o in n.outputs:
                shape = physical.get(o, shapes[o])
                size = max(1, int(np.prod(shape)))
                # best fit among free buffers, else a new one
                fits = [b for b in free if b.size >= size]
                if fits:
                    flat = min(fits, key=lambda b: b.size)
                    free = [b for b in free if b is not flat]
                else:
                    limits.check(size * 4, f"{n.op} node '{n.name}': output {shapes[o]}", InputError)
                    limits.check(arena + size * 4, f"the plan's buffers (input shapes {input_shapes})", InputError)
                    flat = np.empty(size, dtype=np.float32)
                    arena += flat.nbytes
                held[o] = flat
                buffers.append(flat[:int(np.prod(shape))].reshape(shape))
        in_shapes = [shapes[x] if x else None for x in n.inputs]
        macs = int(spec.macs(in_shapes, [shapes[o] for o in n.outputs], n.attrs)) if spec.macs else 0
        steps.append(Step(n.name, n.op, spec.kernel, ops.registry.StepAttrs(n.attrs), [slot_of(x) if x else -1 for x in n.inputs],
                          [slot_of(o) for o in n.outputs], buffers, macs))
        # release buffers whose last reader was this node
        for t in list(held):
            if last.get(t, -1) <= i:
                free.append(held.pop(t))
    return Plan(dict(input_shapes), shapes, steps, slots, env, arena, threads=kernel_threads())


def _run_step(st: Step, args: list, counters: dict) -> list:
    if st.layer is None:
        return st.kernel(args, st.attrs, st.buffers)
    outs, counters[st.node_name] = st.layer.run(args, st.attrs, st.buffers)
    return outs


REPLAY = True     # False: every run steps through the plan (benchmarks and tests compare both)


def execute(plan: Plan, feeds: dict[str, np.ndarray], profile: bool = False, run_step=None) -> list:
    """Run the plan's steps in order, by its replay where it has a valid one (module docstring).
    run_step(step, args, counters) -> outputs replaces the normal step call (profilers use it; it
    must compute the step's outputs)."""
    env = plan.env
    for name, arr in feeds.items():
        env[plan.slots[name]] = arr
    plan.last_counters.clear()
    if profile or run_step is not None or not REPLAY:
        _step_through(plan, run_step or _run_step, profile)
        return env
    rp = plan.replay
    if rp is not None and rp.key == (kernel_threads(), generation()):
        for f, args in rp.calls:
            f(*args)
    else:
        plan.replay = None               # a failed recording leaves none behind
        plan.replay = _record(plan, [plan.slots[name] for name in feeds])
    return env


def _again(st: Step, plan: Plan) -> None:
    """A step of a replay run the usual way."""
    env = plan.env
    outs = _run_step(st, [env[i] if i >= 0 else None for i in st.inputs], plan.last_counters)
    for slot, arr in zip(st.outputs, outs):
        env[slot] = arr


def _record(plan: Plan, fed: list) -> Replay | None:
    """Run the plan's steps the usual way and return the replay of this run. A slot is stable when
    it holds the same array, with new contents, on every run: weights, the plan's buffers, views of
    stable slots. A step whose inputs are stable or graph inputs and whose outputs are its buffers
    is replayed by its calls (_feeding); a compressed layer on stable inputs by the calls its
    layer.replay lists, if it has one; any other step runs the usual way every time."""
    key = (kernel_threads(), generation())
    env = plan.env
    moving = set(fed)                     # slots that may hold another array next run
    calls, steps, prev = [], [], None
    fixed = {}                            # replayed layers' counters, put back by one call per run
    for st in plan.steps:
        steps += [prev] * (len(calls) - len(steps))               # the previous step's calls
        prev = st.node_name
        args = [env[i] if i >= 0 else None for i in st.inputs]
        outs = _run_step(st, args, plan.last_counters)
        for slot, arr in zip(st.outputs, outs):
            env[slot] = arr
        stable_in = not any(i in moving for i in st.inputs)
        fed_in = set(st.inputs) & moving <= set(fed)                # graph inputs, as given
        if st.layer is not None:
            in_place = st.buffers is not None and all(o is b for o, b in zip(outs, st.buffers))
            redo = _layer_calls(st, args) if in_place and fed_in else None
            if redo is not None and not stable_in:
                redo = (_feeding(redo[0], env, [i for i in set(st.inputs) if i in fed]), redo[1])
            if redo is not None and redo[0] is not None:
                calls += redo[0]
                fixed[st.node_name] = redo[1]
            else:
                calls.append((_again, (st, plan)))
            if not in_place:
                moving.update(st.outputs)
            continue
        if st.buffers is None:            # a view op: nothing to redo while it views a stable array
            if not (stable_in and all(np.may_share_memory(o, args[0]) for o in outs)):
                calls.append((_again, (st, plan)))
                moving.update(st.outputs)
            continue
        if not all(o is b for o, b in zip(outs, st.buffers)):
            calls.append((_again, (st, plan)))
            moving.update(st.outputs)
            continue
        spec_calls = ops.OPS[st.op].calls if fed_in else None
        listed = spec_calls(args, st.attrs, st.buffers) if spec_calls is not None else None
        if listed is not None and not stable_in:
            listed = _feeding(listed, env, [i for i in set(st.inputs) if i in fed])
        if listed is not None:
            calls += listed
        elif stable_in:
            calls.append((st.kernel, (args, st.attrs, st.buffers)))
        else:
            calls.append((_again, (st, plan)))
    if fixed:
        calls.append((plan.last_counters.update, (fixed,)))
    steps += [prev] * (len(calls) - len(steps))
    if (kernel_threads(), generation()) != key:
        return None                       # a buffer grew while recording: record again next run
    return Replay(key, calls, steps)


def _layer_calls(st: Step, args: list) -> tuple | None:
    """(calls, counters) of a compressed step whose layer can be replayed (compression.py:
    layer.replay, for methods whose work depends on shapes only), else None. The counters are the
    same every run: a read-only copy, put back as it is."""
    replay = getattr(st.layer, "replay", None)
    got = replay(args, st.attrs, st.buffers) if replay is not None else None
    if got is None:
        return None
    listed, counters = got
    counters = counters.copy()
    counters.setflags(write=False)
    return listed, counters


def _feeding(listed: list, env: list, fed: list) -> list | None:
    """A step's calls on graph inputs, each made to take the arrays of the run it is replayed in:
    (_with_feeds, (env, [(argument position, slot, shape)], function, args)), the argument being
    the input itself or a reshape of all of it. None when an argument is made from an input any
    other way (a part or a copy of it)."""
    out = []
    for f, args in listed:
        subs = []
        for k, a in enumerate(args):
            if not isinstance(a, np.ndarray):
                continue
            for slot in fed:
                x = env[slot]
                if a is x or (a.size == x.size and a.dtype == x.dtype and a.flags.c_contiguous
                              and a.ctypes.data == x.ctypes.data):
                    subs.append((k, slot, a.shape))
                    break
                if np.may_share_memory(a, x):
                    return None
        out.append((_with_feeds, (env, subs, f, args)) if subs else (f, args))
    return out


def _with_feeds(env: list, subs: list, f, args: tuple) -> None:
    args = list(args)
    for k, slot, shape in subs:
        args[k] = env[slot].reshape(shape)      # a view: inputs are C-contiguous (check_feeds)
    f(*args)


def _step_through(plan: Plan, run_step, profile: bool) -> None:
    env = plan.env
    timings, counters = plan.timings, plan.last_counters
    for st in plan.steps:
        args = [env[i] if i >= 0 else None for i in st.inputs]
        if profile:
            t0 = time.perf_counter()
            outs = run_step(st, args, counters)
            timings[st.node_name] = timings.get(st.node_name, 0.0) + time.perf_counter() - t0
        else:
            outs = run_step(st, args, counters)
        for slot, arr in zip(st.outputs, outs):
            env[slot] = arr


_F32 = np.dtype(np.float32)


def check_feeds(graph: Graph, feeds: dict, planned: dict | None = None) -> dict[str, np.ndarray]:
    """Validate names and shapes of user inputs; return them as contiguous float32. planned: input
    shapes a plan was made for (its buffers passed the memory limit then): an input of that shape
    skips the limit's lookup, which read the environment for tens of microseconds after a run."""
    if planned is not None and type(feeds) is dict and len(feeds) == len(planned):
        for name, shape in planned.items():   # the usual run: the plan's shapes, float32, contiguous
            arr = feeds.get(name)
            if type(arr) is not np.ndarray or arr.shape != shape or arr.dtype is not _F32 \
                    or not arr.flags.c_contiguous:
                break
        else:
            return feeds
    if not isinstance(feeds, dict):
        raise InputError(f"feeds must be a dict of input name -> array, got {type(feeds).__name__}")
    missing = [k for k in graph.inputs if k not in feeds]
    extra = [k for k in feeds if k not in graph.inputs]
    if missing or extra:
        raise InputError(f"inputs expected {list(graph.inputs)}; missing {missing}, unknown {extra}")
    out = {}
    for name, expected in graph.inputs.items():
        arr = feeds[name]
        if (type(arr) is np.ndarray and arr.dtype == np.float32 and arr.flags.c_contiguous and arr.size
                and len(arr.shape) == len(expected) and all(e is None or e == d for e, d in zip(expected, arr.shape))):
            if arr.size * 4 > limits.max_bytes():
                limits.check(arr.size * 4, f"input '{name}' {arr.shape}", InputError)
            out[name] = arr                # the usual case: the checks below in one test
            continue
        arr = np.asarray(arr)
        ok = arr.ndim == len(expected) and all(e is None or e == d for e, d in zip(expected, arr.shape))
        if not ok:
            want = tuple("N" if e is None else e for e in expected)
            raise InputError(f"input '{name}': expected shape {want}, got {arr.shape}")
        if arr.dtype.kind not in "fiu":
            raise InputError(f"input '{name}': expected a numeric array, got dtype {arr.dtype}")
        if arr.size == 0:
            raise InputError(f"input '{name}': shape {arr.shape} is empty (batch 0?); nothing to compute")
        limits.check(arr.size * 4, f"input '{name}' {arr.shape}", InputError)
        out[name] = np.ascontiguousarray(arr, dtype=np.float32)
    return out


def stored_bits(graph: Graph, node, name: str) -> int:
    """Bits per value of weight `name` of `node` as the .haste file stores it (float16 files aside):
    2 for PROM's ternary codes, 8 for int8 codes, 32 for float32."""
    if node.op == "PromConv" and node.inputs[1] == name and node.attrs.get("weights") == "ternary":
        return 2
    return 8 * graph.weights[name].dtype.itemsize


class Model:
    """A loaded model. Mirrors onnxruntime's session: run(feeds) -> outputs, safe to call from
    several threads at once (module docstring)."""

    def __init__(self, graph: Graph, path=None):
        unknown = sorted({n.op for n in graph.nodes} - set(ops.OPS))
        if unknown:
            raise ModelFileError(f"{path or 'model'}: ops not supported by this haste-edge: {unknown}")
        self.graph = graph
        self.path = path
        self._local = threading.local()    # per thread: plans by input shapes, the last plan run
        # (method name, {node name: layer}) of the compression method set (compression.py), ("", {})
        # for none: replaced whole, never edited in place, so a run reads one consistent pair
        self._compression: tuple = ("", {})
        from .prom.method import OPS as PROM_OPS, Prom
        if any(n.op in PROM_OPS for n in graph.nodes):    # a PROM-converted model counts its layers
            self.compress(Prom())

    @property
    def input_names(self) -> list[str]:
        return list(self.graph.inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self.graph.outputs)

    @property
    def meta(self) -> dict:
        return self.graph.meta

    @property
    def compression_name(self) -> str:
        """The compression method set ("haste", "prom"; "" for none)."""
        return self._compression[0]

    @property
    def compressed(self) -> dict:
        """{node name: layer} of the compression method set (empty for none)."""
        return self._compression[1]

    @property
    def last_plan(self) -> Plan | None:
        """The plan of this thread's last run (None before it)."""
        return getattr(self._local, "last_plan", None)

    def input_shape(self, batch: int = 1, name: str | None = None) -> tuple:
        shape = self.graph.inputs[name or self.input_names[0]]
        return tuple(batch if d is None else d for d in shape)

    def plan(self, input_shapes: dict[str, tuple], blocked: bool | None = None) -> Plan:
        """This thread's plan for these input shapes, its steps set to the current compressed layers.
        blocked (build_plan): None = wherever the compressed layers (which read and write NCHW)
        allow; False for tools that read the tensors between steps."""
        plans = self._local.__dict__.setdefault("plans", {})
        compression = self._compression          # one read: compress may replace it meanwhile
        layers = compression[1]
        blocked = blocked is not False
        nchw = frozenset(layers) if blocked else frozenset()
        threads = run_threads()                  # layouts depend on it (ops.conv.blocked_output)
        key = (tuple(sorted((k, tuple(v)) for k, v in input_shapes.items())), blocked, nchw, threads)
        plan = plans.get(key)
        if plan is None:
            with holding(threads):
                plan = plans[key] = build_plan(self.graph, dict(input_shapes), blocked=blocked, nchw_nodes=nchw)
        if plan.compression is not compression:
            for st in plan.steps:
                st.layer = layers.get(st.node_name)
            plan.compression = compression
            plan.replay = None
        return plan

    def compress(self, method=None) -> dict:
        """Run the nodes `method` takes through its layers (compression.py), or every node dense
        with None. Takes effect on the next run (in every thread; a run already going finishes with
        what it started with): no reconversion, no recompilation. Returns {node name: layer}."""
        if method is None:
            self._compression = ("", {})
            return {}
        check_method(method)
        layers = dict(method.layers(self.graph))
        check_layers(method.name, layers)
        self._compression = (method.name, layers)
        return dict(layers)

    def set_haste(self, config=None) -> dict:
        """Shorthand for compress(Haste(config)) (a HasteConfig or a spec like "L=12,P=4"), or
        compress(None). Returns {conv node name: LayerSetting}."""
        from .haste import Haste
        layers = self.compress(None if config is None else Haste(config))
        return {name: layer.setting for name, layer in layers.items()}

    def set_httm(self, config=None) -> dict:
        """Shorthand for compress(Httm(config)) (an HttmConfig or a spec like "q=0.5,kv=0.5"; tokens
        per frame from the model's sidecar), or compress(None). Returns {attention node: layer}."""
        from .httm.method import Httm, tokens_per_frame
        return self.compress(None if config is None else Httm(config, tokens_per_frame(self.meta)))

    def last_stats(self):
        """RunStats of this thread's last run: dense and executed MACs per layer and per image,
        and the compression method's overhead."""
        from .stats import RunStats, dense_layer, method_layer
        plan = self.last_plan
        if plan is None:
            raise RuntimeError("no run yet")
        n = next(iter(plan.input_shapes.values()))[0]
        layers = []
        for st in plan.steps:
            if st.node_name in plan.last_counters:
                layers.append(method_layer(st.node_name, st.op, plan.compression[0], plan.last_counters[st.node_name],
                                           st.layer.fields, st.layer.overhead))
            elif st.macs:
                layers.append(dense_layer(st.node_name, st.op, st.macs, n))
        return RunStats(layers)

    def run(self, feeds: dict, output_names: list[str] | None = None, *, profile: bool = False) -> dict:
        unknown = output_names and [n for n in output_names if n not in self.graph.outputs]
        if unknown:
            # an intermediate tensor's buffer is reused once its last reader has run
            raise InputError(f"not graph outputs: {unknown}; this model's outputs are {self.output_names}")
        plan = self._local.__dict__.get("last_plan")
        given = feeds
        feeds = check_feeds(self.graph, feeds, plan.input_shapes if plan is not None else None)
        with run_context():                # first: a plan is made for the run's thread count
            # feeds passed on as given have the last plan's shapes (check_feeds)
            if plan is None or plan.compression is not self._compression or plan.threads != kernel_threads() \
                    or (feeds is not given and any(plan.input_shapes[k] != v.shape for k, v in feeds.items())):
                plan = self._local.last_plan = self.plan({k: v.shape for k, v in feeds.items()})
            env = execute(plan, feeds, profile=profile)
        # copies: the plan's buffers are overwritten by the next run
        return {n: env[plan.slots[n]].copy() for n in (output_names or self.graph.outputs)}

    def kernel_state_bytes(self) -> int:
        """Bytes the kernels derived for this thread's plans (packed weights, a method's set-up), from
        what they keep on their steps (registry.StepAttrs): every array reached, counted once by
        the memory it owns, the model's own weights left out."""
        def root(a):
            while isinstance(a.base, np.ndarray):
                a = a.base
            return a

        seen = {id(root(w)) for w in self.graph.weights.values()}
        total = 0

        def add(obj, depth):
            nonlocal total
            if isinstance(obj, np.ndarray):
                r = root(obj)
                if id(r) not in seen:
                    seen.add(id(r))
                    total += r.nbytes
            elif depth < 4 and isinstance(obj, (dict, list, tuple)):
                for v in (obj.values() if isinstance(obj, dict) else obj):
                    add(v, depth + 1)
            elif depth < 4 and hasattr(obj, "__dict__"):   # step state > plan > prepared conv > its parts
                for v in vars(obj).values():
                    add(v, depth + 1)

        for plan in getattr(self._local, "plans", {}).values():
            for st in plan.steps:
                add(st.attrs.state, 0)
        return total

    def macs(self, batch: int = 1) -> dict[str, int]:
        """Dense multiply-accumulates per layer (node name -> MACs) for a batch of `batch`."""
        plan = self.plan({k: self.input_shape(batch, k) for k in self.input_names})
        return {st.node_name: st.macs for st in plan.steps if st.macs}

    def layers(self, batch: int = 1) -> list[dict]:
        """One row per node: op, name, output shape, parameter count, dense MACs."""
        plan = self.plan({k: self.input_shape(batch, k) for k in self.input_names})
        macs = {st.node_name: st.macs for st in plan.steps}   # fused Add / Relu nodes have none
        rows = []
        for n in self.graph.nodes:
            params = sum(int(self.graph.weights[x].size) for x in n.inputs if x in self.graph.weights)
            bits = {x: stored_bits(self.graph, n, x) for x in n.inputs if x in self.graph.weights}
            rows.append({"name": n.name, "op": n.op, "output_shape": plan.shapes[n.outputs[0]],
                         "params": params, "macs": macs.get(n.name, 0),
                         "weight_bits": bits.get(n.inputs[1], 0) if len(n.inputs) > 1 else 0,
                         "weight_bytes": sum((int(self.graph.weights[x].size) * b + 7) // 8 for x, b in bits.items())})
        return rows
