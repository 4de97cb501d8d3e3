"""Masks computed only when there are detections: the exported graph's mask-only nodes moved under an ONNX ``If``.

A one-stage model computes its mask features (RTMDet-Ins's prototype tower, PP-YOLOE-seg's stride-4 prototypes) on
the whole picture before it knows whether anything was found: 20-30% of the graph for nothing on a picture without
detections. Traced graphs cannot branch, so after export every node that only the ``masks`` output needs (none of
boxes, scores or labels depends on it) is moved into the then-branch of an ``If`` on "at least one detection"; the
else-branch gives the same empty masks [0, h, w]. The nodes are the same nodes, so the masks are the same masks;
ONNX Runtime and OpenVINO run the branch as a subgraph that reads the outer graph's tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import numpy as np

COMPUTE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum"}  # worth a branch: skipping them saves time
COUNT_OUTPUT = "scores"  # [N]: one row per detection
MASKS_OUTPUT = "masks"


def _subgraph_reads(node: Any) -> set[str]:
    """Names a node's subgraphs (If / Loop bodies) read from outside themselves."""
    import onnx

    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            made = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
            made |= {t.name for t in graph.initializer}
            for inner in graph.node:
                names |= {i for i in [*inner.input, *_subgraph_reads(inner)] if i and i not in made}
    return names


def _ancestors(nodes: list, producer: dict[str, int], reads: list[set[str]], outputs: Iterable[str]) -> set[int]:
    """Indices of the nodes the named tensors depend on."""
    seen: set[int] = set()
    todo = [producer[o] for o in outputs if o in producer]
    while todo:
        index = todo.pop()
        if index in seen:
            continue
        seen.add(index)
        todo.extend(producer[name] for name in reads[index] if name in producer)
    return seen


def mask_only_nodes(graph: Any) -> list[int]:
    """Indices (in graph order) of the nodes only the ``masks`` output depends on."""
    nodes = list(graph.node)
    reads = [{i for i in n.input if i} | _subgraph_reads(n) for n in nodes]
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    others = [o.name for o in graph.output if o.name != MASKS_OUTPUT]
    needed_elsewhere = _ancestors(nodes, producer, reads, others)
    mask_side = _ancestors(nodes, producer, reads, [MASKS_OUTPUT])
    return sorted(mask_side - needed_elsewhere)


def _empty_masks(graph: Any, mask_stride: int | None) -> tuple[list, str] | None:
    """Nodes giving float masks [0, h, w] as the model would with no detection, and their output's name; None when
    h and w are neither fixed in the graph nor a stride of the input."""
    from onnx import TensorProto, helper, numpy_helper

    masks = next(o for o in graph.output if o.name == MASKS_OUTPUT)
    dims = masks.type.tensor_type.shape.dim
    name = "masks_none_found"

    def const(label: str, values: list[int]) -> Any:
        array = numpy_helper.from_array(np.array(values, dtype=np.int64))
        return helper.make_node("Constant", [], [f"{name}_{label}"], value=array)

    # ConstantOfShape, not a Constant holding the empty tensor: OpenVINO's ONNX reader turns an empty Constant in
    # a branch into a scalar, and its If then has no rank
    if len(dims) == 3 and all(d.HasField("dim_value") for d in dims[1:]):
        nodes = [const("dims", [0, dims[1].dim_value, dims[2].dim_value])]
    elif len(dims) == 3 and mask_stride:
        images = graph.input[0].name
        nodes = [
            const("start", [2]),
            const("end", [4]),
            const("stride", [int(mask_stride)]),
            const("zero", [0]),
            helper.make_node("Shape", [images], [f"{name}_shape"]),
            helper.make_node("Slice", [f"{name}_shape", f"{name}_start", f"{name}_end"], [f"{name}_hw"]),
            helper.make_node("Div", [f"{name}_hw", f"{name}_stride"], [f"{name}_low"]),
            helper.make_node("Concat", [f"{name}_zero", f"{name}_low"], [f"{name}_dims"], axis=0),
        ]
    else:
        return None
    nodes.append(
        helper.make_node(
            "ConstantOfShape", [f"{name}_dims"], [name], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])
        )
    )
    return nodes, name


def _copy_read_outputs(branch_nodes: list, outputs: list[str]) -> list:
    """Identity copies of the graph outputs the branch reads (PP-YOLOE-seg and Mask R-CNN cut masks to their
    ``boxes``), the branch renamed to read the copies: OpenVINO's ONNX reader loses a branch's result when the
    branch reads an outer graph output by name."""
    from onnx import helper

    read = {i for n in branch_nodes for i in n.input} & set(outputs)
    for node in branch_nodes:
        node.input[:] = [f"{i}_for_masks" if i in read else i for i in node.input]
    return [helper.make_node("Identity", [name], [f"{name}_for_masks"]) for name in sorted(read)]


def defer_mask_branch(model: Any, mask_stride: int | None) -> Any:
    """``model`` (an ONNX ModelProto with outputs boxes, scores, labels, masks) with its mask-only nodes under an
    ``If`` on "at least one detection"; unchanged when those nodes compute nothing worth skipping."""
    from onnx import helper, numpy_helper

    graph = model.graph
    moved = mask_only_nodes(graph)
    nodes = list(graph.node)
    if not any(nodes[i].op_type in COMPUTE_OPS for i in moved):
        return model
    empty = _empty_masks(graph, mask_stride)
    if empty is None:
        return model
    found = "masks_found"
    branch_nodes = [nodes[i] for i in moved]
    for node in branch_nodes:
        node.output[:] = [found if o == MASKS_OUTPUT else o for o in node.output]
    masks = next(o for o in graph.output if o.name == MASKS_OUTPUT)

    def output(name: str) -> Any:  # the masks output's type and shape: OpenVINO's If needs the rank
        value = copy.deepcopy(masks)
        value.name = name
        return value

    copies = _copy_read_outputs(branch_nodes, [o.name for o in graph.output if o.name != MASKS_OUTPUT])
    then_graph = helper.make_graph(branch_nodes, "masks_when_found", [], [output(found)])
    else_nodes, empty_name = empty
    else_graph = helper.make_graph(else_nodes, "masks_when_none", [], [output(empty_name)])
    zero = numpy_helper.from_array(np.array(0, dtype=np.int64), "detections_zero")
    condition = [
        helper.make_node("Shape", [COUNT_OUTPUT], ["detections_shape"]),
        helper.make_node("Gather", ["detections_shape", "detections_zero"], ["detections_count"], axis=0),
        helper.make_node("Greater", ["detections_count", "detections_zero"], ["detections_found"]),
        helper.make_node(
            "If", ["detections_found"], [MASKS_OUTPUT], then_branch=then_graph, else_branch=else_graph,
            name="masks_if_detections",
        ),
    ]
    kept = [n for i, n in enumerate(nodes) if i not in set(moved)]
    del graph.node[:]
    graph.node.extend(kept + copies + condition)
    graph.initializer.append(zero)
    inner = {o for n in branch_nodes for o in n.output}
    shapes = [v for v in graph.value_info if v.name not in inner]
    del graph.value_info[:]
    graph.value_info.extend(shapes)
    return model
