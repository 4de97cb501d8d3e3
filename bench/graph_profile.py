"""Where an exported graph's time goes: OpenVINO's per-node performance counters, grouped by graph region and by
node type, with each region's convolution/matrix-product rate (GFLOP/s) for per-FLOP comparisons.

    python bench/graph_profile.py --recipes rtmdet_ins_tiny ppyoloe_seg_s --instances 0 10 100 [--precision f32]
    python bench/graph_profile.py --xml /tmp/peer/yolo11n-seg_100_openvino_model/yolo11n-seg_100.xml
    python bench/graph_profile.py --peak --recipes rtmdet_ins_tiny --instances 0 10 --xml YOLO_0.xml YOLO_10.xml

``--recipes``: instaseg recipes made to output exactly N instances (`fixed_instances`), exported at 640 x 640.
``--xml``: any OpenVINO IR (an instaseg export, or Ultralytics' from `bench/peer_ultralytics.py`).
Regions: the top module of a node's name (backbone, neck, head, transformer, ...; Ultralytics' model.0-10 are its
backbone, the last module its head, the rest its neck); nodes outside modules are the decoding, split around the
graph's NonMaxSuppression: "select" (everything NMS depends on: sigmoid, top-k, gathers), "nms", "after nms"
(what depends on NMS: kept boxes, mask decoding); "decode" when there is no NMS op. Graphs run round robin,
``--iters`` times each; a node's time is the median of its runs; the wall time range includes the runtime's overhead.

``--peak``: this machine's best convolution rate, measured first on large 3x3 convolutions alone (the same
threads and precision), and each graph's floor: its convolution and matrix-product GFLOPs at that rate (an ``If``
body's included when its node took at least half its floor, i.e. it ran). No graph of those FLOPs runs faster on
this machine without computing fewer of them, which is how to tell a slow graph from an expensive one.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixed_instances import export_fixed, square_pictures  # noqa: E402

FLOP_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")
YOLO_BACKBONE_LAST = 10  # YOLO11's yaml: layers 0-10 backbone, then the neck, the last layer the head
PEAK_SHAPES = ((256, 40), (512, 40), (256, 80))  # (channels, side) of the 3x3 convolutions that measure the peak


def node_flops(model) -> dict[str, float]:
    """FLOPs (a multiply-add counts 2) of each convolution and matrix product of a static-shape `ov.Model`."""
    flops = {}
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in FLOP_TYPES or not op.get_output_partial_shape(0).is_static:
            continue
        out = np.prod([int(d) for d in op.get_output_shape(0)], dtype=np.float64)
        if kind == "MatMul":
            a = [int(d) for d in op.get_input_shape(0)]
            transpose_a = bool(op.get_attributes().get("transpose_a", False))
            inner = a[-2] if transpose_a else a[-1]
        else:
            w = [int(d) for d in op.get_input_shape(1)]
            if kind == "GroupConvolution":  # [groups, out/g, in/g, kh, kw]
                inner = float(np.prod(w[2:]))
            elif kind == "ConvolutionBackpropData":  # [in, out, kh, kw]: each input pixel x in x kernel
                out = np.prod([int(d) for d in op.get_input_shape(0)], dtype=np.float64)
                inner = float(np.prod(w[1:]))
            else:  # [out, in, kh, kw]
                inner = float(np.prod(w[1:]))
        flops[op.get_friendly_name()] = 2.0 * out * inner
    return flops


def if_body_flops(model) -> dict[str, float]:
    """Per ``If`` node, the FLOPs of the static-shape convolutions and products of its costlier body."""
    return {
        op.get_friendly_name(): max(sum(node_flops(op.get_function(body)).values()) for body in (0, 1))
        for op in model.get_ordered_ops()
        if op.get_type_name() == "If"
    }


def machine_peak(precision: str, threads: int, runs: int = 30) -> float:
    """GFLOP/s of this machine's fastest large 3x3 convolution (median of ``runs``), compiled as the graphs are."""
    import openvino as ov
    from openvino import opset13 as ops

    core, rng, best = ov.Core(), np.random.default_rng(0), 0.0
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    for channels, side in PEAK_SHAPES:
        x = ops.parameter([1, channels, side, side], np.float32)
        w = ops.constant(rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.01)
        conv = ops.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1])
        request = core.compile_model(ov.Model([conv], [x]), "CPU", config).create_infer_request()
        feed = [rng.standard_normal((1, channels, side, side)).astype(np.float32)]
        times = []
        for i in range(runs + 3):
            start = time.perf_counter()
            request.infer(feed)
            if i >= 3:
                times.append(time.perf_counter() - start)
        best = max(best, 2.0 * channels * channels * 9 * side * side / float(np.median(times)) / 1e9)
    return best


def module_region(name: str, last_yolo_layer: int) -> str | None:
    """The region of a node named after its module, or None for nodes outside modules."""
    yolo = re.match(r"__module\.model\.(\d+)[./]", name)
    if yolo:
        index = int(yolo.group(1))
        return "backbone" if index <= YOLO_BACKBONE_LAST else ("head" if index == last_yolo_layer else "neck")
    module = re.match(r"[^/]*/(\w+)/", name)  # instaseg's ONNX names: /backbone/stem/..., /head/cls_convs.0/...
    if module and not module.group(1)[0].isupper():  # /Concat_3/... is an op, not a module
        return module.group(1)
    return None


def runtime_graph(compiled) -> tuple[dict[str, list[str]], dict[str, str], dict[str, list[str]]]:
    """Of the compiled (runtime) graph: node -> its inputs' nodes, node -> layer type, node -> original nodes."""
    inputs, types, originals = {}, {}, {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        name = op.get_friendly_name()
        info = op.get_rt_info()
        inputs[name] = [i.get_source_output().get_node().get_friendly_name() for i in op.inputs()]
        types[name] = info["layerType"].astype(str)
        originals[name] = [n for n in info["originalLayersNames"].astype(str).split(",") if n]
    return inputs, types, originals


def _closure(start: set[str], edges: dict[str, list[str]]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        node = todo.pop()
        for nxt in edges.get(node, []):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def regions(inputs: dict[str, list[str]], types: dict[str, str], originals: dict[str, list[str]]) -> dict[str, str]:
    """node -> region (see the module notes); a fused node renamed by the runtime is placed by its original nodes."""
    indices = [int(m.group(1)) for n in inputs for m in [re.match(r"__module\.model\.(\d+)[./]", n)] if m]
    last_yolo = max(indices, default=-1)
    nms = {n for n, t in types.items() if t == "NonMaxSuppression"}
    outputs: dict[str, list[str]] = collections.defaultdict(list)
    for node, srcs in inputs.items():
        for src in srcs:
            outputs[src].append(node)
    before, after = _closure(nms, inputs), _closure(nms, outputs)
    out = {}
    for node in inputs:
        named = [module_region(n, last_yolo) for n in [node, *originals.get(node, [])]]
        region = next((r for r in named if r is not None), None)
        if region is None:
            if node in nms:
                region = "nms"
            elif not nms:
                region = "decode"
            else:
                region = "after nms" if node in after else ("select" if node in before else "decode")
        out[node] = region
    return out


def feed_for(xml: Path, picture: np.ndarray) -> dict[str, np.ndarray]:
    """The graph's inputs for one 640 x 640 RGB picture: instaseg's pre-processing for its exports (metadata in
    rt_info), RGB / 255 for others (Ultralytics)."""
    return feeds_for(xml, [picture])[0]


def feeds_for(xml: Path, pictures: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """`feed_for` of each picture, the graph loaded once."""
    from instaseg.inference.backends.openvino import OpenVinoBackend
    from instaseg.inference.preprocess import preprocess

    try:
        backend = OpenVinoBackend(xml, static_shapes="off")
    except Exception:  # noqa: BLE001 - not an instaseg export
        return [{"x": (picture.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)} for picture in pictures]
    from instaseg.inference.backends.exported import graph_inputs

    feeds = []
    for picture in pictures:
        batch, sizes = preprocess([picture], backend.spec)
        feeds.append(next(graph_inputs(batch, sizes, backend.graph, backend.spec)))
    return feeds


class Profiled:
    """One compiled graph with performance counters on, ready to be run again and again."""

    def __init__(self, xml: Path, picture: np.ndarray, precision: str, threads: int):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(xml))
        self.flops = node_flops(model)
        self.body_flops = if_body_flops(model)
        config = {"PERF_COUNT": True, "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.inputs, self.types, self.originals = runtime_graph(self.compiled)
        names = {i.get_any_name() for i in self.compiled.inputs}
        self.feed = {k: v for k, v in feed_for(xml, picture).items() if k in names}
        self.request.infer(self.feed)
        self.samples: dict[str, list[float]] = collections.defaultdict(list)
        self.walls: list[float] = []

    def run(self) -> None:
        start = time.perf_counter()
        self.request.infer(self.feed)
        self.walls.append((time.perf_counter() - start) * 1000)
        for p in self.request.profiling_info:
            self.samples[p.node_name].append(p.real_time.total_seconds() * 1000)

    def result(self) -> dict:
        """Per node the median of its runs (a machine shared with other jobs stalls some runs, not the same nodes
        each time), regions, types and FLOPs."""
        per_node = {n: float(np.median(v)) for n, v in self.samples.items()}
        exec_types = {p.node_name: p.exec_type for p in self.request.profiling_info}
        node_gflop = {n: sum(self.flops.get(o, 0.0) for o in self.originals.get(n, [n])) / 1e9 for n in per_node}
        return {
            "per_node": per_node,
            "region": regions(self.inputs, self.types, self.originals),
            "type": self.types,
            "exec": exec_types,
            "gflop": node_gflop,
            "wall_ms": self.walls,
            "total_gflop": sum(self.flops.values()) / 1e9,
            "if_bodies": {n: (per_node.get(n, 0.0), f / 1e9) for n, f in self.body_flops.items()},
            "outputs": [tuple(self.request.get_output_tensor(i).shape) for i in range(len(self.compiled.outputs))],
        }


def print_profile(title: str, prof: dict, top: int, peak: float | None = None) -> None:
    per_node, total = prof["per_node"], sum(prof["per_node"].values())
    print(f"\n== {title}: wall {min(prof['wall_ms']):.1f}-{max(prof['wall_ms']):.1f} ms, counters {total:.1f} ms "
          f"(medians), load {os.getloadavg()[0]:.1f}, "
          f"{prof['total_gflop']:.2f} GFLOP (conv + matmul), outputs {prof['outputs']}")
    if peak:
        # a body ran if its node took at least half the time its FLOPs need at the peak (an untaken one: ~0 ms)
        ran = sum(gflop for ms, gflop in prof["if_bodies"].values() if ms >= 0.5 * gflop / peak * 1000)
        run_gflop = prof["total_gflop"] + ran
        floor, wall = run_gflop / peak * 1000, float(np.median(prof["wall_ms"]))
        print(
            f"  floor at this machine's peak ({peak:.0f} GFLOP/s): {run_gflop:.2f} GFLOP run (If bodies that ran "
            f"included) -> {floor:.1f} ms; wall median {wall:.1f} ms, so {floor / wall:.0%} of the peak on average"
        )
    by_region: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    by_type: dict[str, float] = collections.Counter()
    for node, ms in per_node.items():
        row = by_region[prof["region"].get(node, "runtime")]
        row[0] += ms
        if prof["gflop"].get(node):
            row[1] += prof["gflop"][node]
            row[2] += ms
        by_type[f"{prof['type'].get(node, '?')} ({prof['exec'].get(node, '?')})"] += ms
    print(f"  {'region':<14}{'ms':>9}{'share':>8}{'GFLOP':>9}{'GFLOP/s':>9}")
    for region, (ms, gflop, flop_ms) in sorted(by_region.items(), key=lambda kv: -kv[1][0]):
        rate = f"{gflop / flop_ms * 1000:9.0f}" if flop_ms > 0 else " " * 9
        print(f"  {region:<14}{ms:9.2f}{ms / total * 100:7.1f}%{gflop:9.2f}{rate}")
    print(f"  {'node type (kernel)':<44}{'ms':>9}{'share':>8}")
    for kind, ms in sorted(by_type.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {kind[:44]:<44}{ms:9.2f}{ms / total * 100:7.1f}%")
    print(f"  slowest nodes outside convolutions{'':<10}{'ms':>9}")
    others = [(n, ms) for n, ms in per_node.items() if not prof["gflop"].get(n) or prof["region"].get(n) in
              ("select", "nms", "after nms", "decode")]
    for node, ms in sorted(others, key=lambda kv: -kv[1])[:top]:
        print(f"  {prof['region'].get(node, '?'):<10}{prof['type'].get(node, '?'):<18}{node[:36]:<36}{ms:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="*", default=[])
    parser.add_argument("--xml", nargs="*", type=Path, default=[])
    parser.add_argument("--instances", nargs="+", type=int, default=[0, 10, 100])
    parser.add_argument("--precision", nargs="+", default=["f32"], choices=["f32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path("/tmp/instaseg_graph_profile"))
    parser.add_argument("--peak", action="store_true", help="measure the machine's conv peak; print each floor")
    args = parser.parse_args()
    peaks = {p: machine_peak(p, args.threads) for p in args.precision} if args.peak else {}
    for precision, rate in peaks.items():
        print(f"this machine's peak, {precision}, {args.threads} threads: {rate:.0f} GFLOP/s (best of 3x3 "
              f"convolutions {', '.join(f'{c}ch {s}x{s}' for c, s in PEAK_SHAPES)})")
    picture = square_pictures(1)[0]
    jobs = [(f"{r} {n} instances", export_fixed(r, n, "fp32", args.work)) for r in args.recipes for n in args.instances]
    jobs += [(str(x), x) for x in args.xml]
    graphs = [(title, p, Profiled(xml, picture, p, args.threads)) for title, xml in jobs for p in args.precision]
    for _ in range(args.iters):  # round robin: every graph meets the same moments of a shared machine
        for _, _, graph in graphs:
            graph.run()
    for title, precision, graph in graphs:
        print_profile(f"{title}, {precision}", graph.result(), args.top, peaks.get(precision))

if __name__ == "__main__":
    main()
