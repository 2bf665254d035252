"""A model's dataflow graph: which layer reads which, branches and merges included.

The graph comes from `torch.fx.symbolic_trace`: every called leaf module and every tensor-valued
functional step (the residual `out + identity`, `torch.cat`, `torch.flatten`, …) is a node; an
edge runs from each node to the nodes that read its output. Steps that make no tensor (`x.size()`)
and the parameters a forward reads are left out, and edges pass through them. Output shapes
come from running the traced graph on meta tensors (shapes without data; a zero image when an
operation has no meta version); parameters and multiply-adds from the shape flow (`probe`).

A model `torch.fx` cannot trace (data-dependent control flow) is drawn as the modules in the
order they ran, one after another, and the graph's `note` says so.

For drawing: `absorbed` merges the steps that keep the shape (BatchNorm, activations, dropout)
into the block before them, and `folded` collapses containers (a BasicBlock, a stage) into one
node each, with the same rules as the table's folding (`summary.visible_records`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import fx, nn

from dashboard.analysis import probe
from dashboard.analysis.hooks import _first_tensor, _probing

INPUT_KIND = "input"
# Module kinds that keep the shape and read one input: drawn inside the block before them.
_ABSORBED = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.dropout._DropoutNd,
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Mish,
    nn.Softplus,
)
_ABSORBED_FUNCTIONS = {"relu", "relu_", "relu6", "gelu", "silu", "sigmoid", "tanh", "dropout"}
# Steps of a forward that make no tensor (sizes, dims): never nodes.
_NOT_TENSORS = {"size", "dim", "numel", "getattr", "len", "type", "__len__"}
_FUNCTION_NAMES = {
    "add": ("add", "Add +"),
    "iadd": ("add", "Add +"),
    "add_": ("add", "Add +"),
    "cat": ("cat", "Concatenate"),
    "concat": ("cat", "Concatenate"),
    "concatenate": ("cat", "Concatenate"),
    "stack": ("cat", "Stack"),
    "mul": ("mul", "Multiply ×"),
    "imul": ("mul", "Multiply ×"),
    "mul_": ("mul", "Multiply ×"),
    "matmul": ("matmul", "Matmul"),
    "flatten": ("flatten", "Flatten"),
    "view": ("reshape", "Reshape"),
    "reshape": ("reshape", "Reshape"),
    "mean": ("mean", "Mean"),
    "relu": ("ReLU", "ReLU"),
    "relu_": ("ReLU", "ReLU"),
    "adaptive_avg_pool2d": ("pool", "AdaptiveAvgPool"),
    "avg_pool2d": ("pool", "AvgPool"),
    "max_pool2d": ("pool", "MaxPool"),
    "dropout": ("Dropout", "Dropout"),
}


@dataclass(frozen=True)
class GraphNode:
    """One block of the graph: a module call, a functional step, the input, or a folded container.

    `inputs` are the ids of the nodes whose outputs it reads, in the order it reads them;
    `members` the ids of the traced nodes it stands for (itself alone unless steps were absorbed
    into it or it is a folded container); `steps` the short labels of absorbed steps.
    `params` and `mult_adds` are the shape flow's (0 for functional steps); `shape` is the
    output shape of one image, None where the input broke the model before this node.
    """

    id: str
    name: str  # module name ("layer1.0.conv1"), the step's name ("add"), or "input"
    kind: str  # module class ("Conv2d"), "add", "cat", …, "input", or the container's class
    label: str  # "Conv 3×3/2, 128"
    inputs: tuple[str, ...]
    shape: tuple[int, ...] | None
    params: int = 0
    mult_adds: int = 0
    detail: str = ""  # kernel/stride/padding and formula, for the hover
    scope: tuple[tuple[str, str, str], ...] = ()  # enclosing containers: (call key, name, class)
    members: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    folded: bool = False
    absorbable: bool = (
        False  # keeps the shape, reads one input: may be drawn inside the block before
    )


@dataclass(frozen=True)
class ModelGraph:
    """Nodes in an order where each comes after those it reads; `traced` False for the chain
    drawn when torch.fx could not trace the model (`note` says why)."""

    nodes: tuple[GraphNode, ...]
    traced: bool
    note: str = ""
    broken: str = ""  # id of the node the input could not pass, "" when it passes

    @property
    def edges(self) -> list[tuple[str, str]]:
        return [(source, node.id) for node in self.nodes for source in node.inputs]

    @property
    def branches(self) -> bool:
        """Whether the data ever forks or merges (a skip connection, a concatenation)."""
        readers: dict[str, int] = {}
        for source, _ in self.edges:
            readers[source] = readers.get(source, 0) + 1
        return any(len(n.inputs) > 1 for n in self.nodes) or any(c > 1 for c in readers.values())

    def node(self, node_id: str) -> GraphNode:
        return next(n for n in self.nodes if n.id == node_id)


def _pair(value: Any) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def module_label(module: nn.Module) -> str:
    """A block's kind and numbers: "Conv 11×11/4, 64", "MaxPool 3/2", "Linear 4096", "ReLU"."""
    name = type(module).__name__
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel, stride = module.kernel_size, module.stride
        text = f"{'ConvT' if module.transposed else 'Conv'} {'×'.join(map(str, kernel))}"
        text += f"/{'×'.join(map(str, stride)) if len(set(stride)) > 1 else stride[0]}"
        text = text.removesuffix("/1")
        if module.groups > 1:
            depthwise = module.groups == module.in_channels
            text += " depthwise" if depthwise else f" groups {module.groups}"
        return f"{text}, {module.out_channels}"
    if isinstance(module, nn.Linear):
        return f"Linear {module.out_features}"
    if isinstance(module, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)):
        kernel, stride = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
        k = str(kernel[0]) if len(set(kernel)) == 1 else "×".join(map(str, kernel))
        s = str(stride[0]) if len(set(stride)) == 1 else "×".join(map(str, stride))
        return f"{name.removesuffix('2d').removesuffix('1d')} {k}/{s}"
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        size = "×".join(str(s) for s in _pair(module.output_size))
        return f"{name.removesuffix('2d')} → {size}"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "BatchNorm"
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return f"Dropout {module.p:g}"
    return name


def _step_label(label: str) -> str:
    """How an absorbed step reads inside its block: "BN", "ReLU", "Dropout 0.5"."""
    return "BN" if label == "BatchNorm" else label


def _function_kind(node: fx.Node) -> tuple[str, str]:
    """(kind, label) of a call_function / call_method node."""
    target = node.target
    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    if name == "getitem" and target is operator.getitem:
        return "getitem", "Item"
    return _FUNCTION_NAMES.get(name, (name, name))


def _scope(node: fx.Node) -> tuple[tuple[str, str, str], ...]:
    """The containers a node runs inside, outermost first: (call key, module name, class)."""
    stack = node.meta.get("nn_module_stack") or {}
    entries = [
        (key, value[0], getattr(value[1], "__name__", str(value[1])))
        for key, value in stack.items()
    ]
    if node.op == "call_module" and entries:
        entries = entries[:-1]  # the module itself
    return tuple(entries)


class _ShapeRecorder(fx.Interpreter):
    """Runs a traced graph and keeps each node's output shape (batch dimension dropped)."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.shapes: dict[str, tuple[int, ...] | None] = {}
        self.current = ""

    def run_node(self, n: fx.Node) -> Any:
        self.current = n.name
        result = super().run_node(n)
        tensor = _first_tensor(result) if isinstance(result, (torch.Tensor, tuple, list)) else None
        self.shapes[n.name] = tuple(tensor.shape[1:]) if tensor is not None else None
        return result


def _trace(model: nn.Module) -> fx.GraphModule:
    """symbolic_trace in eval mode (the graph the pages' forward passes take: no auxiliary
    training heads) under the probes' lock: the trace patches `nn.Module.__call__` for the
    whole process while it runs, which a probe's forward pass in another session must not meet."""
    with _probing(model):
        return fx.symbolic_trace(model)


def _traced_shapes(
    model: nn.Module, input_shape: tuple[int, ...]
) -> tuple[fx.GraphModule, dict[str, tuple[int, ...] | None], str]:
    """(graph module, node → output shape, node that broke or ""), on meta tensors where the
    model allows, else with a zero image (as `probe.shape_flow` decides)."""
    try:
        traced = _trace(probe._meta_copy(model))
        device: str | torch.device | None = "meta"
    except Exception:  # not copyable: trace the model itself
        traced, device = _trace(model), None
    for attempt in range(2):
        recorder = _ShapeRecorder(traced)
        dtype = probe._model_dtype(model)
        if device is None:
            device = probe._model_device(model)
        x = torch.zeros((1, *input_shape), dtype=dtype, device=device)
        try:
            with _probing(traced):
                recorder.run(x)
            return traced, recorder.shapes, ""
        except Exception as error:
            on_meta = probe._is_meta(device)
            if attempt == 0 and on_meta and probe._unsupported_on_meta(error):
                if math.prod(input_shape) > probe.MAX_REAL_TRACE_VALUES:
                    return traced, recorder.shapes, recorder.current
                traced, device = _trace(model), None
                continue
            return traced, recorder.shapes, recorder.current
    raise AssertionError("unreachable")


def _record_detail(record: probe.LayerRecord | None) -> str:
    if record is None or record.kernel is None:
        return ""
    parts = (record.kernel, record.stride, record.padding)
    text = "/".join(str(p[0]) if p[0] == p[1] else f"{p[0]}×{p[1]}" for p in parts if p)
    return f"kernel/stride/padding {text}" + (f"\n{record.formula}" if record.formula else "")


def model_graph(
    model: nn.Module, input_shape: tuple[int, ...], flow: probe.ShapeFlow | None = None
) -> ModelGraph:
    """The dataflow graph of `model` for one image of `input_shape` (no batch dimension).

    `flow` (the model's shape flow at the same input shape) gives the modules' parameters and
    multiply-adds; it is worked out when not given.
    """
    input_shape = tuple(int(n) for n in input_shape)
    flow = flow if flow is not None else probe.shape_flow(model, input_shape)
    records = {(r.name, r.call_index): r for r in flow.records if r.is_leaf}
    try:
        traced, shapes, broken = _traced_shapes(model, input_shape)
    except Exception as error:  # torch.fx cannot trace it: the modules in the order they ran
        return _chain(model, flow, error)
    modules = dict(model.named_modules())
    kept: dict[str, GraphNode] = {}
    reads: dict[str, tuple[str, ...]] = {}  # every node → the kept nodes it reads
    calls: dict[str, int] = {}
    for node in traced.graph.nodes:
        sources = tuple(
            dict.fromkeys(s for source in node.all_input_nodes for s in reads.get(source.name, ()))
        )
        reads[node.name] = sources
        if node.op in ("output", "get_attr"):
            continue
        shape = shapes.get(node.name)
        if node.op == "placeholder":
            label = "Input"
            kept[node.name] = GraphNode(
                node.name, INPUT_KIND, INPUT_KIND, label, (), shape, members=(node.name,)
            )
            reads[node.name] = (node.name,)
            continue
        if node.op == "call_module":
            target = str(node.target)
            module = modules[target]
            index = calls.get(target, 0)
            calls[target] = index + 1
            record = records.get((target, index))
            kept[node.name] = GraphNode(
                id=node.name,
                name=target if index == 0 else f"{target}#{index}",
                kind=type(module).__name__,
                label=module_label(module),
                inputs=sources,
                shape=shape,
                params=record.params_total if record else 0,
                mult_adds=record.mult_adds if record else 0,
                detail=_record_detail(record),
                scope=_scope(node),
                members=(node.name,),
                absorbable=isinstance(module, _ABSORBED),
            )
            reads[node.name] = (node.name,)
            continue
        kind, label = _function_kind(node)
        makes_tensor = shape is not None if node.name in shapes else kind not in _NOT_TENSORS
        if not makes_tensor or kind in _NOT_TENSORS:
            continue  # a size or a dim: edges pass through it
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        scope = _scope(node)
        kept[node.name] = GraphNode(
            node.name,
            f"{scope[-1][1]} · {node.name}" if scope else node.name,
            kind,
            label,
            sources,
            shape,
            scope=scope,
            members=(node.name,),
            absorbable=name in _ABSORBED_FUNCTIONS,
        )
        reads[node.name] = (node.name,)
    return ModelGraph(tuple(kept.values()), traced=True, broken=broken if broken in kept else "")


def _chain(model: nn.Module, flow: probe.ShapeFlow, error: Exception) -> ModelGraph:
    """The fallback: the leaf modules in the order they ran, each reading the one before."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    modules = dict(model.named_modules())
    nodes = [
        GraphNode(
            "input", "input", INPUT_KIND, "Input", (), tuple(flow.input_shape), members=("input",)
        )
    ]
    for record in flow.leaves:
        node_id = record.name if record.call_index == 0 else f"{record.name}#{record.call_index}"
        module = modules.get(record.name)
        scope = tuple((n, n, "") for n in _ancestor_names(record.name))
        nodes.append(
            GraphNode(
                node_id,
                node_id,
                record.type,
                module_label(module) if module is not None else record.type,
                (nodes[-1].id,),
                tuple(record.output_shape),
                record.params_total,
                record.mult_adds,
                _record_detail(record),
                scope,
                (node_id,),
                absorbable=isinstance(module, _ABSORBED),
            )
        )
    note = (
        f"torch.fx could not trace {type(model).__name__} ({reason}): drawn as its modules in "
        "the order they ran, one after another — branches and merges are not shown."
    )
    broken = flow.broken.layer if flow.broken is not None else ""
    return ModelGraph(tuple(nodes), traced=False, note=note, broken=broken)


def _ancestor_names(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


# ---------------------------------------------------------------------------------------------
# Simplifying for the drawing: absorbed steps and folded containers


def _rewired(nodes: list[GraphNode], merged: dict[str, str]) -> list[GraphNode]:
    """Inputs renamed through `merged` (id → the id it became), self-reads and repeats dropped."""

    def target(node_id: str) -> str:
        while node_id in merged:
            node_id = merged[node_id]
        return node_id

    out = []
    for node in nodes:
        inputs = tuple(dict.fromkeys(target(i) for i in node.inputs if target(i) != node.id))
        out.append(replace(node, inputs=inputs))
    return out


def absorbed(graph: ModelGraph) -> ModelGraph:
    """Steps that keep the shape and read one input (BatchNorm, activations, dropout) merged
    into the block before them, when that block feeds nothing else: "Conv 3×3, 64" with steps
    ("BN", "ReLU")."""
    readers: dict[str, int] = {}
    for source, _ in graph.edges:
        readers[source] = readers.get(source, 0) + 1
    by_id: dict[str, GraphNode] = {}
    merged: dict[str, str] = {}
    order: list[str] = []
    for node in graph.nodes:
        source = merged.get(node.inputs[0], node.inputs[0]) if len(node.inputs) == 1 else ""
        while source in merged:
            source = merged[source]
        host = by_id.get(source)
        if (
            host is not None
            and host.kind != INPUT_KIND
            and not host.folded
            and not node.folded
            and readers.get(node.inputs[0], 0) == 1
            and host.shape == node.shape
            and node.absorbable
            and node.scope == host.scope  # never across a container's edge
        ):
            by_id[host.id] = replace(
                host,
                shape=node.shape,
                params=host.params + node.params,
                mult_adds=host.mult_adds + node.mult_adds,
                members=host.members + node.members,
                steps=(*host.steps, _step_label(node.label)),
            )
            merged[node.id] = host.id
            continue
        by_id[node.id] = node
        order.append(node.id)
    nodes = _rewired([by_id[i] for i in order], merged)
    return replace(graph, nodes=tuple(nodes), broken=merged.get(graph.broken, graph.broken))


def folded(
    graph: ModelGraph, *, depth: int | None = None, names: Collection[str] = ()
) -> ModelGraph:
    """Containers at `depth` or deeper, or named in `names`, each collapsed into one node (as
    the table folds them): it reads what its insides read from outside, carries their summed
    parameters and multiply-adds, and puts out the shape of its last node read from outside."""

    def fold_of(node: GraphNode) -> tuple[str, str, str] | None:
        for entry in node.scope:  # outermost first: an outer fold wins
            name = entry[1]
            if name in names or (depth is not None and name.count(".") >= depth):
                return entry
        return None

    groups: dict[str, list[GraphNode]] = {}
    entries: dict[str, tuple[str, str, str]] = {}
    for node in graph.nodes:
        entry = fold_of(node)
        if entry is not None:
            groups.setdefault(entry[0], []).append(node)
            entries[entry[0]] = entry
    groups = {key: members for key, members in groups.items() if len(members) > 1}
    if not groups:  # a container drawn as one block already stays as it is (its label says more)
        return graph
    merged = {m.id: key for key, members in groups.items() for m in members}
    readers: dict[str, list[str]] = {}
    for source, reader in graph.edges:
        readers.setdefault(source, []).append(reader)

    def leaves_group(node: GraphNode, key: str) -> bool:
        """Read from outside its container, or by no node at all (the model's output)."""
        read_by = readers.get(node.id, [])
        return not read_by or any(merged.get(r) != key for r in read_by)

    nodes: list[GraphNode] = []
    for node in graph.nodes:
        key = merged.get(node.id)
        if key is None:
            nodes.append(node)
            continue
        if any(n.id == key for n in nodes):
            continue
        members = groups[key]
        _, name, kind = entries[key]
        exit_node = next((m for m in reversed(members) if leaves_group(m, key)), members[-1])
        nodes.append(
            GraphNode(
                id=key,
                name=name,
                kind=kind,
                label=kind,
                inputs=tuple(i for m in members for i in m.inputs if merged.get(i) != key),
                shape=exit_node.shape,
                params=sum(m.params for m in members),
                mult_adds=sum(m.mult_adds for m in members),
                scope=node.scope[: node.scope.index(entries[key])],
                members=tuple(i for m in members for i in m.members),
                folded=True,
            )
        )
    broken = merged.get(graph.broken, graph.broken)
    return replace(graph, nodes=_topological(_rewired(nodes, merged)), broken=broken)


def _topological(nodes: list[GraphNode]) -> tuple[GraphNode, ...]:
    """The nodes with each after every node it reads, otherwise in their given order."""
    placed: dict[str, GraphNode] = {}
    waiting = list(nodes)
    while waiting:
        ready = next(n for n in waiting if all(i in placed for i in n.inputs))
        placed[ready.id] = ready
        waiting.remove(ready)
    return tuple(placed.values())


@dataclass(frozen=True)
class GraphPlan:
    """What the graph view draws: the simplified graph and the depth its containers fold at."""

    graph: ModelGraph
    depth: int | None  # containers at this depth or deeper drawn whole; None: none by depth
    deepest: bool  # True when nothing was folded to fit


def graph_plan(
    graph: ModelGraph,
    *,
    depth: int | None = None,
    names: Sequence[str] = (),
    max_nodes: int = 60,
) -> GraphPlan:
    """Absorbed steps, then containers folded at `depth` (None: the deepest that keeps the graph
    at `max_nodes` or fewer, folding one level more at a time; the graph whole if it fits)."""
    simple = absorbed(graph)
    if depth is not None:
        return GraphPlan(folded(simple, depth=depth, names=names), depth, False)
    whole = folded(simple, names=names)
    if len(whole.nodes) <= max_nodes:
        return GraphPlan(whole, None, True)
    deepest = max((len(node.scope) for node in simple.nodes), default=0)
    plan = GraphPlan(whole, None, True)
    for cut in range(deepest - 1, -1, -1):
        plan = GraphPlan(folded(simple, depth=cut, names=names), cut, False)
        if len(plan.graph.nodes) <= max_nodes:
            break
    return plan


# --- feature maps drawn into the graph (CNN Explainer's overview) -------------------------------

BLOCK_CHANNELS = 4  # channels shown beside a block: its most active ones


@dataclass(frozen=True)
class BlockMaps:
    """What one block of the graph outputs for an image: its most active channels."""

    layer: str  # the probe key of the module whose output this is ("layer1.0.relu#1")
    channels: tuple[int, ...]  # which channels, most active (highest mean) first
    maps: Any  # numpy (k, H, W) float32, the raw values of those channels


def block_outputs(traced: ModelGraph, shown: ModelGraph, model: nn.Module) -> dict[str, str]:
    """For each block of `shown` (a plan of `traced`), the probe key of the module call whose
    output is the block's output: its last member's (a block with absorbed steps ends with
    them; a folded container is its own module). Blocks that end in a functional step (an add
    with nothing after it) or the input have none."""
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    key_of: dict[str, str] = {}
    for node in traced.nodes:  # in the order of the forward pass: the k-th call of a module
        if node.name in modules and node.kind != INPUT_KIND:
            index = calls.get(node.name, 0)
            calls[node.name] = index + 1
            key_of[node.id] = node.name if index == 0 else f"{node.name}#{index}"
    found = {}
    for node in shown.nodes:
        if node.folded and node.name in modules:
            found[node.id] = node.name
        elif node.members and node.members[-1] in key_of:
            found[node.id] = key_of[node.members[-1]]
        elif node.id in key_of:
            found[node.id] = key_of[node.id]
    return found


def block_maps(
    traced: ModelGraph,
    shown: ModelGraph,
    model: nn.Module,
    x: torch.Tensor,
    channels: int = BLOCK_CHANNELS,
) -> dict[str, BlockMaps]:
    """Each block's most active channels for the one image `x` (1, C, H, W), from one forward
    pass; blocks whose output is not a stack of maps (a linear layer's vector) have none."""
    keys = block_outputs(traced, shown, model)
    with torch.no_grad():
        outputs = probe.activations(model, x, sorted(set(keys.values()))) if keys else {}
    first = tuple(range(min(channels, x.shape[1])))  # the input's own channels, in order
    found = {
        node.id: BlockMaps("input", first, x[0, : len(first)].numpy())
        for node in shown.nodes
        if node.kind == INPUT_KIND
    }
    for node_id, key in keys.items():
        value = outputs[key]
        if value.dim() != 4:
            continue
        maps = value[0].float()
        order = torch.argsort(maps.mean(dim=(1, 2)), descending=True, stable=True)[:channels]
        found[node_id] = BlockMaps(key, tuple(int(c) for c in order), maps[order].numpy())
    return found
