"""The trained module tree -> `class Model(nn.Sequential)` with one constructor call per layer.

Each call has literal arguments read from the layer's attributes, for the layer types listed in
`LAYERS`; every call written is rebuilt from the same values and compared with the trained
layer. Custom blocks of the families (and the tables they read) are written into the script
once, as their source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from automodel.data import DataSpec
from automodel.export import verbatim
from automodel.export.literals import ExportError, literal, tuple_of
from automodel.models import blocks, pretrained, resnet, tabular


@dataclass(frozen=True)
class Layer:
    """How to write one layer type as a constructor call with literal arguments.

    `positional` names the attributes passed by position. `keywords` maps attribute names to
    the constructor's default: the argument is left out when the value equals it (a callable
    default is computed from the layer; `ALWAYS` writes it). `choices` lists the strings an
    attribute may hold. `source` is the class definition of a custom block (torch-only, `nn`
    in scope), written once into the script, after the `needs` (sources of the tables it
    reads).
    """

    positional: tuple[str, ...] = ()
    keywords: dict = field(default_factory=dict)
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str | None = None
    needs: tuple[str, ...] = ()


ALWAYS = object()
_INPLACE = {"inplace": False}
_CONV = Layer(
    ("in_channels", "out_channels"),
    {
        "kernel_size": ALWAYS,
        "stride": 1,
        "padding": 0,
        "dilation": 1,
        "groups": 1,
        "bias": True,
        "padding_mode": "zeros",
    },
    {"padding": ("same", "valid"), "padding_mode": ("zeros", "reflect", "replicate", "circular")},
)
_NORM = Layer(
    ("num_features",),
    {"eps": 1e-5, "momentum": 0.1, "affine": True, "track_running_stats": True},
)


def _kernel(layer: nn.Module):
    return layer.kernel_size


_MAX_POOL = Layer(
    ("kernel_size",),
    {"stride": _kernel, "padding": 0, "dilation": 1, "return_indices": False, "ceil_mode": False},
)
_AVG_POOL = Layer(
    ("kernel_size",),
    {"stride": _kernel, "padding": 0, "ceil_mode": False, "count_include_pad": True},
)
_ACTIVATIONS = verbatim.definition(blocks, "ACTIVATIONS")

# Layer types the exporter can write. A family that builds anything else fails to export
# with an error naming the layer: add its entry here (and a test family shape in the tests).
LAYERS: dict[type[nn.Module], Layer] = {
    nn.Linear: Layer(("in_features", "out_features"), {"bias": True}),
    nn.Conv1d: _CONV,
    nn.Conv2d: _CONV,
    nn.BatchNorm1d: _NORM,
    nn.BatchNorm2d: _NORM,
    nn.LayerNorm: Layer(("normalized_shape",), {"eps": 1e-5, "elementwise_affine": True}),
    nn.ReLU: Layer(keywords=_INPLACE),
    nn.GELU: Layer(keywords={"approximate": "none"}, choices={"approximate": ("none", "tanh")}),
    nn.SiLU: Layer(keywords=_INPLACE),
    nn.Tanh: Layer(),
    nn.Sigmoid: Layer(),
    nn.LeakyReLU: Layer(keywords={"negative_slope": 0.01, **_INPLACE}),
    nn.ELU: Layer(keywords={"alpha": 1.0, **_INPLACE}),
    nn.Dropout: Layer(keywords={"p": 0.5, **_INPLACE}),
    nn.MaxPool1d: _MAX_POOL,
    nn.MaxPool2d: _MAX_POOL,
    nn.AvgPool1d: _AVG_POOL,
    nn.AvgPool2d: _AVG_POOL,
    nn.AdaptiveAvgPool1d: Layer(("output_size",)),
    nn.AdaptiveAvgPool2d: Layer(("output_size",)),
    nn.Flatten: Layer(keywords={"start_dim": 1, "end_dim": -1}),
    nn.Unflatten: Layer(("dim", "unflattened_size")),
    nn.Identity: Layer(),
    # Custom blocks of the families, written into the script once as classes.
    resnet.ResBlock: Layer(
        ("dims", "in_channels", "out_channels"),
        {"stride": 1, "activation": "relu", "batch_norm": True},
        {"activation": tuple(blocks.ACTIVATIONS)},
        source=verbatim.definition(resnet, "ResBlock"),
        needs=(_ACTIVATIONS,),
    ),
    resnet.ResLinear: Layer(
        ("width",),
        {"activation": "relu", "dropout": 0.0, "batch_norm": True},
        {"activation": tuple(blocks.ACTIVATIONS)},
        source=verbatim.definition(resnet, "ResLinear"),
        needs=(_ACTIVATIONS,),
    ),
    blocks.FastDropout: Layer(("p",), source=verbatim.definition(blocks, "FastDropout")),
    tabular.PeriodicEmbedding: Layer(
        ("n_features", "spans"),
        {"n_frequencies": 16, "d_embedding": 16, "frequency_scale": 0.1},
        source=verbatim.definition(tabular, "PeriodicEmbedding"),
    ),
    tabular.EnsembleInput: Layer(
        ("k", "features"),
        {"init": "normal"},
        {"init": ("normal", "signs")},
        source=verbatim.definition(tabular, "EnsembleInput"),
    ),
    tabular.EnsembleHeads: Layer(
        ("k", "in_features", "out_features"),
        {"probabilities": True},
        source=verbatim.definition(tabular, "EnsembleHeads"),
    ),
    # The pretrained family's backbone: the script builds it with torchvision (random
    # weights, then weights.pt), so it needs torchvision; `new_model` loads the pretrained
    # weights it started from.
    pretrained.Backbone: Layer(
        ("name", "in_channels"),
        {"finetune": "full"},
        {"name": pretrained.BACKBONES, "finetune": ("head", "full")},
        source=verbatim.definition(pretrained, "Backbone"),
    ),
}


def model_class(
    family: str, spec: DataSpec, model: nn.Sequential, name: str = "Model", of: str = "this trial"
) -> tuple[str, list[str]]:
    """(`class Model` rendered from `model`, the sources of the blocks it uses, in order);
    an ensemble's member is `class <name>`, the network of trial `of`."""
    sources: dict[str, None] = {}  # an ordered set
    was_training = model.training
    # Eval mode: the layers run on one zero row, which must not move batch-norm statistics;
    # rebuilding a layer to check it draws from torch's generator, which stays as it was.
    with torch.random.fork_rng(devices=[]):
        layers = _layers(model.eval(), torch.zeros(1, *spec.input_shape), 12, sources)
    model.train(was_training)
    shape = tuple_of([str(n) for n in spec.input_shape])
    outputs = f"{spec.n_classes} class scores" if spec.task == "classification" else "1 value"
    n_params = sum(p.numel() for p in model.parameters())
    text = "\n".join(
        [
            f"class {name}(nn.Sequential):",
            f'    """The {family} of {of}: {shape} inputs -> {outputs}, {n_params:,} parameters."""',
            "",
            "    def __init__(self) -> None:",
            "        super().__init__(",
            *layers,
            "        )",
        ]
    )
    return text, list(sources)


def _layers(seq: nn.Sequential, x: torch.Tensor, indent: int, sources: dict) -> list[str]:
    """One line per layer (a nested Sequential spans several), each noting its output shape."""
    pad = " " * indent
    lines = []
    for i, (name, child) in enumerate(seq.named_children()):
        if name != str(i):
            raise ExportError(f"layer names must be 0, 1, ...; got {name!r} at position {i}")
        with torch.no_grad():
            y = child(x)
        note = f"  # -> {tuple_of([str(n) for n in y.shape[1:]])}"
        if type(child) is nn.Sequential and len(child):
            inner = _layers(child, x, indent + 4, sources)
            lines += [f"{pad}nn.Sequential(", *inner, f"{pad}),{note}"]
        elif type(child) is nn.Sequential:
            lines.append(f"{pad}nn.Sequential(),{note}")
        else:
            lines.append(f"{pad}{_call(child, sources)},{note}")
        x = y
    return lines


def _call(layer: nn.Module, sources: dict) -> str:
    """`nn.Linear(64, 256)`: the constructor call that rebuilds `layer`, checked by rebuilding."""
    cls = type(layer)
    rule = LAYERS.get(cls)  # exact type: a subclass may behave differently
    if rule is None:
        raise ExportError(
            f"cannot export layer {cls.__module__}.{cls.__name__}: it is not in "
            "automodel.export.LAYERS; a model family that uses it must teach the exporter "
            "how to write it"
        )
    values = [_attr(layer, a) for a in rule.positional]
    args = [
        literal(a, v, rule.choices.get(a, ())) for a, v in zip(rule.positional, values, strict=True)
    ]
    keywords = {}
    for key, default in rule.keywords.items():
        value = _attr(layer, key)
        if callable(default):
            default = default(layer)
        if default is ALWAYS or value != default:
            args.append(f"{key}={literal(key, value, rule.choices.get(key, ()))}")
            keywords[key] = value
    name = f"nn.{cls.__name__}"
    if rule.source is not None:
        name = _block_name(cls)
        sources.update(dict.fromkeys([*rule.needs, rule.source]))
    expr = f"{name}({', '.join(args)})"
    _check_layer(expr, layer, cls(*values, **keywords))
    return expr


def _attr(layer: nn.Module, name: str):
    value = getattr(layer, name)
    if name == "bias":  # the constructor takes a flag; the layer holds the tensor or None
        return value is not None
    if name == "unflattened_size":  # a shape: (1, 1) stays a tuple
        return tuple(value)
    # kernel_size=(5, 5) is written kernel_size=5; spans=((0, 4),) stays a tuple of spans
    if isinstance(value, tuple) and value and all(v == value[0] for v in value):
        return value if isinstance(value[0], tuple) else value[0]
    return value


def _check_layer(expr: str, layer: nn.Module, rebuilt: nn.Module) -> None:
    """The call written as `expr` (rebuilt here from the same values) must give back `layer`."""
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    rebuilt_shapes = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if repr(rebuilt) != repr(layer) or rebuilt_shapes != shapes:
        raise ExportError(
            f"{expr} does not rebuild the trained {layer!r}; fix the entry of "
            f"{type(layer).__name__} in automodel.export.LAYERS"
        )


def _block_name(cls: type) -> str:
    name = cls.__name__
    if not name.isidentifier() or name.startswith("_") or name in verbatim.NAMES:
        raise ExportError(f"block class name {name!r} clashes with the script's own names")
    return name
