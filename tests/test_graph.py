"""The dataflow graph (analysis/graph.py) and its drawing (figures/graph.py).

Edges are checked against torch.fx's own trace, read here straight from
`torch.fx.symbolic_trace(model).graph`; shapes against a real forward pass with plain hooks;
parameters and multiply-adds against the modules' own tensors and the convolution formula."""

from __future__ import annotations

import itertools
import operator

import pytest
import torch
import torchvision
from torch import fx, nn

from dashboard import models
from dashboard.analysis import graph
from dashboard.figures import graph as graph_figures
from dashboard.models import checkpoints
from tests.conftest import REPO_ROOT


def lenet5() -> tuple[nn.Module, tuple[int, int, int]]:
    return models.build_model("lenet5"), (1, 28, 28)


def tv_resnet18() -> tuple[nn.Module, tuple[int, int, int]]:
    return torchvision.models.resnet18(weights=None), (3, 224, 224)  # the architecture only


def shipped_resnet18_small() -> tuple[nn.Module, tuple[int, int, int]]:
    loaded = checkpoints.load_checkpoint(
        REPO_ROOT / "trained" / "resnet18-small-cifar10.safetensors"
    )
    return loaded.model, tuple(loaded.card.input_shape)


MODELS = {
    "lenet5": lenet5,
    "tv:resnet18": tv_resnet18,
    "resnet18-small-cifar10": shipped_resnet18_small,
}


@pytest.fixture(scope="module", params=list(MODELS))
def built(request) -> tuple[str, nn.Module, tuple[int, int, int], graph.ModelGraph]:
    model, shape = MODELS[request.param]()
    model.eval()
    return request.param, model, shape, graph.model_graph(model, shape)


def fx_edges(model: nn.Module, kept: set[str]) -> set[tuple[str, str]]:
    """The oracle: every (input, node) pair of torch.fx's trace, both ends in `kept`."""
    traced = fx.symbolic_trace(model)
    return {
        (source.name, node.name)
        for node in traced.graph.nodes
        if node.name in kept
        for source in node.all_input_nodes
        if source.name in kept
    }


def hooked_shapes(model: nn.Module, shape: tuple[int, ...]) -> tuple[dict, dict]:
    """Each leaf module call's output and input shape from a real forward pass with hooks,
    keyed "name" for the first call and "name#k" for the k-th repeat (as the graph names them)."""
    outputs: dict[str, tuple[int, ...]] = {}
    inputs: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}

    def hooks(name: str):
        def before(_module, args):
            key = name if calls.get(name, 0) == 0 else f"{name}#{calls[name]}"
            inputs[key] = tuple(args[0].shape[1:])

        def after(_module, _args, out):
            key = name if calls.get(name, 0) == 0 else f"{name}#{calls[name]}"
            outputs[key] = tuple(out.shape[1:])
            calls[name] = calls.get(name, 0) + 1

        return before, after

    handles = []
    for name, module in model.named_modules():
        if name and next(module.children(), None) is None:
            before, after = hooks(name)
            handles += [
                module.register_forward_pre_hook(before),
                module.register_forward_hook(after),
            ]
    try:
        with torch.no_grad():
            model(torch.rand(1, *shape))
    finally:
        for handle in handles:
            handle.remove()
    return outputs, inputs


def test_edges_are_torch_fx_edges(built) -> None:
    name, model, _, traced = built
    assert traced.traced
    assert not traced.note
    assert not traced.broken
    ids = {n.id for n in traced.nodes}
    fx_nodes = {n.name: n for n in fx.symbolic_trace(model).graph.nodes}
    # every module call, every residual add and the input are nodes; nothing that fx lacks
    must = {n for n, node in fx_nodes.items() if node.op in ("call_module", "placeholder")}
    must |= {n for n, node in fx_nodes.items() if node.target is operator.add}
    assert must <= ids <= set(fx_nodes)
    assert set(traced.edges) == fx_edges(model, ids)
    assert len(traced.edges) == len(set(traced.edges))
    assert traced.branches == (name != "lenet5")


def test_every_residual_add_has_two_inputs(built) -> None:
    name, _, _, traced = built
    adds = [n for n in traced.nodes if n.kind == "add"]
    assert len(adds) == (0 if name == "lenet5" else 8)
    for add in adds:
        assert len(set(add.inputs)) == len(add.inputs) == 2, add
    # the three stages that halve the map read their skip through a 1×1 convolution
    downsampled = [a for a in adds if any("downsample" in traced.node(i).name for i in a.inputs)]
    assert len(downsampled) == (0 if name == "lenet5" else 3)


def test_shapes_and_numbers_equal_a_real_forward_pass(built) -> None:
    _, model, shape, traced = built
    outputs, inputs = hooked_shapes(model, shape)
    modules = dict(model.named_modules())
    by_id = {n.id: n for n in traced.nodes}
    module_nodes = [n for n in traced.nodes if n.name.split("#")[0] in modules]
    assert {n.name for n in module_nodes} == set(outputs)
    for node in module_nodes:
        assert node.shape == outputs[node.name], node.name
        module = modules[node.name.split("#")[0]]
        first_call = "#" not in node.name
        assert node.params == (sum(p.numel() for p in module.parameters()) if first_call else 0)
        if isinstance(module, nn.Conv2d):
            c, h, w = node.shape
            kh, kw = module.kernel_size
            assert node.mult_adds == h * w * c * module.in_channels // module.groups * kh * kw
    assert by_id[traced.nodes[0].id].shape == shape
    # a functional step's output is what the module reading it receives
    functional = [n for n in traced.nodes if n not in module_nodes and n.kind != graph.INPUT_KIND]
    for node in functional:
        readers = [r for r in module_nodes if r.inputs == (node.id,)]
        assert readers, node.id
        for reader in readers:
            assert node.shape == inputs[reader.name], (node.id, reader.name)


def test_absorbed_and_folded_graphs_are_the_quotient_of_the_trace(built) -> None:
    name, model, _, traced = built
    full = set(traced.edges)
    for depth in (None, 1, 0):
        plan = graph.graph_plan(traced, depth=depth)
        shown = plan.graph
        owner = {m: n.id for n in shown.nodes for m in n.members}
        assert sorted(owner) == sorted(n.id for n in traced.nodes)  # each traced node once
        quotient = {(owner[a], owner[b]) for a, b in full if owner[a] != owner[b]}
        assert set(shown.edges) == quotient, depth
        assert sum(n.params for n in shown.nodes) == sum(p.numel() for p in model.parameters())
        assert sum(n.mult_adds for n in shown.nodes) == sum(n.mult_adds for n in traced.nodes)
        for node in shown.nodes:
            members = [traced.node(m) for m in node.members]
            assert node.shape in [m.shape for m in members]
    if name != "lenet5":
        blocks = graph.graph_plan(traced, depth=1).graph
        block = blocks.node("layer2.0")
        assert block.folded
        assert block.kind == "BasicBlock"
        assert block.params == sum(p.numel() for p in model.get_submodule("layer2.0").parameters())
        stem = blocks.nodes[1]
        assert stem.label.startswith("Conv ")
        assert stem.steps == ("BN", "ReLU")


def test_labels_say_kind_and_numbers() -> None:
    alexnet = models.build_model("alexnet")
    labels = [n.label for n in graph.model_graph(alexnet, (3, 224, 224)).nodes]
    assert labels[1] == "Conv 11×11/4, 64"
    assert "MaxPool 3/2" in labels
    assert "ReLU" in labels
    assert "Linear 4096" in labels
    assert graph.module_label(nn.Conv2d(32, 32, 3, groups=32)) == "Conv 3×3 depthwise, 32"
    assert graph.module_label(nn.AdaptiveAvgPool2d(1)) == "AdaptiveAvgPool → 1×1"


class _DataDependent(nn.Module):
    """A forward whose path depends on the data: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 26 * 26, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(x))
        if x.sum() > 0:
            x = x * 2
        return self.fc(x.flatten(1))


def test_an_untraceable_model_is_drawn_as_its_module_order_and_says_so() -> None:
    model = _DataDependent()
    with pytest.raises(fx.proxy.TraceError):
        fx.symbolic_trace(model)
    chain = graph.model_graph(model, (1, 28, 28))
    assert not chain.traced
    assert "torch.fx could not trace _DataDependent" in chain.note
    assert [n.name for n in chain.nodes] == ["input", "conv", "relu", "fc"]
    assert chain.edges == [("input", "conv"), ("conv", "relu"), ("relu", "fc")]
    assert [n.shape for n in chain.nodes] == [(1, 28, 28), (4, 26, 26), (4, 26, 26), (10,)]
    assert not chain.branches
    graph_figures.dataflow_graph(graph.graph_plan(chain).graph)  # draws


def test_an_input_that_breaks_the_model_marks_its_node() -> None:
    course = models.build_model("course-net")
    broken = graph.model_graph(course, (1, 32, 32))
    assert broken.node(broken.broken).name == "classifier.fc"
    assert broken.node(broken.broken).shape is None
    assert broken.node("flatten").shape == (500,)  # what fc cannot take
    fig = graph_figures.dataflow_graph(graph.graph_plan(broken).graph)
    assert any(t.name == "breaks here" for t in fig.data)


def _overlaps(segment, box) -> bool:
    (x0, y0), (x1, y1) = segment
    left, right, bottom, top = box
    return max(x0, x1) > left and min(x0, x1) < right and max(y0, y1) > bottom and min(y0, y1) < top


@pytest.mark.parametrize("name", ["lenet5", "alexnet", "vgg13", "resnet18", "resnet18-small"])
def test_drawing_has_one_arrow_per_edge_and_nothing_overlaps(name: str) -> None:
    model = models.build_model(name)
    plan = graph.graph_plan(graph.model_graph(model, models.model_info(name).input_shape))
    shown = plan.graph
    placed = graph_figures.layout(shown)
    assert len({(p.row, p.column) for p in placed.values()}) == len(placed)  # no two blocks meet
    for node in shown.nodes:  # a block sits below everything it reads
        assert all(placed[i].row < placed[node.id].row for i in node.inputs)
    fig = graph_figures.dataflow_graph(shown, title=name)
    arrows = next(t for t in fig.data if t.name == "data")
    assert list(arrows.x).count(None) == len(shown.edges)
    # no arrow runs through a block other than its own two ends
    paths = graph_figures.edge_paths(placed)
    ends = [(source, p.node.id) for p in placed.values() for source in p.node.inputs]
    half_w, half_h = graph_figures.BLOCK_W / 2 - 1, graph_figures.BLOCK_H / 2 - 1
    for path, (source, target) in zip(paths, ends, strict=True):
        for segment in itertools.pairwise(path):
            for p in placed.values():
                if p.node.id in (source, target):
                    continue
                box = (p.x - half_w, p.x + half_w, p.y - half_h, p.y + half_h)
                assert not _overlaps(segment, box), (name, source, target, p.node.id)
    # every block's label and shape are written on it
    texts = [t for t in fig.data if t.mode == "text"]
    assert len(texts) == 3
    assert all(len(t.text) == len(shown.nodes) for t in texts)
    assert fig.layout.height >= (max(p.row for p in placed.values()) + 1) * graph_figures.ROW


# --- feature maps beside the blocks -------------------------------------------------------------


def _most_active(
    maps: torch.Tensor, k: int = graph.BLOCK_CHANNELS
) -> tuple[list[int], torch.Tensor]:
    order = torch.argsort(maps.mean(dim=(1, 2)), descending=True, stable=True)[:k]
    return [int(c) for c in order], maps[order]


def test_block_maps_equal_conv2d_relu_and_pooling_by_hand(shared_datasets) -> None:
    from torch.nn import functional as F

    from dashboard import data

    loaded = checkpoints.load_checkpoint(REPO_ROOT / "trained" / "lenet5-mnist.safetensors")
    model = loaded.model.eval()
    test = data.load_split("mnist", "test", data_root=shared_datasets, download=False)
    x = data.normalize(test.images[7:8], test.info.mean, test.info.std)
    traced = graph.model_graph(model, (1, 28, 28))
    shown = graph.graph_plan(traced).graph
    maps = graph.block_maps(traced, shown, model, x)
    by_name = {n.name: maps.get(n.id) for n in shown.nodes}
    # The conv block absorbed its ReLU: its maps are ReLU(conv), the pooling block's the max.
    f = model.features
    relu1 = F.relu(F.conv2d(x, f.conv1.weight, f.conv1.bias, padding=2))[0]
    pool1 = F.max_pool2d(relu1, 2)
    relu2 = F.relu(F.conv2d(pool1[None], f.conv2.weight, f.conv2.bias))[0]
    for name, key, expected in (
        ("features.conv1", "features.relu1", relu1),
        ("features.pool1", "features.pool1", pool1),
        ("features.conv2", "features.relu2", relu2),
    ):
        channels, values = _most_active(expected.detach())
        block = by_name[name]
        assert (block.layer, list(block.channels)) == (key, channels), name
        torch.testing.assert_close(torch.from_numpy(block.maps), values)
    torch.testing.assert_close(torch.from_numpy(by_name["input"].maps), x[0])
    assert by_name["classifier.fc1"] is None  # a vector, not maps: nothing beside it
    assert by_name["flatten"] is None


def test_a_residual_blocks_maps_are_the_blocks_own_output() -> None:
    model, shape = shipped_resnet18_small()
    model.eval()
    traced = graph.model_graph(model, shape)
    shown = graph.graph_plan(traced).graph
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    maps = graph.block_maps(traced, shown, model, x)
    add = next(n for n in shown.nodes if n.name == "layer1.0 · add")
    with torch.no_grad():  # the oracle: the stem, then the whole first residual block
        stem = model.relu(model.bn1(model.conv1(x)))
        block_out = model.layer1[0](stem)[0]
    channels, values = _most_active(block_out)
    assert list(maps[add.id].channels) == channels
    torch.testing.assert_close(torch.from_numpy(maps[add.id].maps), values)
    # Drawn: one thumbnail per channel of each main-path block, hover naming layer and channel.
    fig = graph_figures.dataflow_graph(shown, maps=maps)
    placed = graph_figures.layout(shown)
    drawn = [p.node.id for p in placed.values() if p.column == 0 and p.node.id in maps]
    assert len(fig.layout.images) == sum(len(maps[i].channels) for i in drawn)
    targets = next(t for t in fig.data if t.name == "feature maps")
    assert f"{maps[add.id].layer} · channel {channels[0]}" in "".join(targets.hovertext)
