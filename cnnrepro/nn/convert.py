"""``convert(model)``: a user's own network (torchvision's, timm's, hand-written) on cnnrepro's
kernels, in one call, with nothing changed but the speed.

Two kinds of change, each reported with its module path:

- swaps, module for module: ``nn.MaxPool2d`` -> :class:`cnnrepro.nn.MaxPool2d` and
  ``nn.LocalResponseNorm`` -> :class:`cnnrepro.nn.LocalResponseNorm` (stateless: no keys change);
- fusions: every conv -> BatchNorm -> ReLU that a module's own ``forward`` calls on its children
  (``nn.Sequential``'s included) runs as one call of the fused op. The module whose forward holds
  the chain (its owner: a torchvision BasicBlock, a Sequential) keeps its class, children,
  attributes, methods and hooks; only its ``forward`` is replaced, by :class:`FusedForward`: the
  code torch.fx traced from it, with each chain rewritten, run on the module itself, so children
  replaced later and hooks added later count. State_dict keys and Parameter objects are the
  original's, so an optimizer built before conversion still trains the converted model.

An owner's forward is rewritten only where that is safe: it traces (children kept as calls), and
traces to the same code in train and eval mode (a forward that branches on ``self.training`` would
otherwise be frozen in one mode; other Python state it reads, such as ``torch.is_grad_enabled()``
or a plain attribute, is read once, at conversion). A chain is fused only when the convolution's
and BatchNorm's outputs feed nothing else, no module of it has hooks, and the convolution is a
plain zero-padded Conv2d; at call time the fused op runs only while that still holds, else the
modules themselves do. Every candidate left alone is reported with the reason.

The model is converted in place (swapped modules replace the originals in their parents, owners get
their new forward) and returned with the report: ``model, report = convert(model)``.
"""

import dataclasses
from typing import NamedTuple

import torch
import torch.fx
import torch.nn.functional as F

from cnnrepro.nn.backend import check_backend
from cnnrepro.nn.conv_bn_relu import ConvBNReLU2d, fusable, fused_forward, has_hooks
from cnnrepro.nn.lrn import LocalResponseNorm
from cnnrepro.nn.max_pool import MaxPool2d

OPS = ("max_pool", "lrn", "conv_bn_relu")
OUR_MODULES = (ConvBNReLU2d, MaxPool2d, LocalResponseNorm)
RELU_FUNCTIONS = (F.relu, F.relu_, torch.relu, torch.relu_)
RELU_METHODS = ("relu", "relu_")


@dataclasses.dataclass(frozen=True)
class Change:
    """One module path and what was done there, or why it was left."""

    path: str
    what: str


@dataclasses.dataclass
class ConversionReport:
    """What convert did (module path and what) and what it left (path and why); print it."""

    replaced: list[Change] = dataclasses.field(default_factory=list)
    left: list[Change] = dataclasses.field(default_factory=list)

    def count(self, word: str) -> int:
        """How many replacements mention ``word`` (e.g. "fused", "MaxPool2d")."""
        return sum(word in change.what for change in self.replaced)

    def __str__(self) -> str:
        lines = [f"cnnrepro.nn.convert: {len(self.replaced)} replaced, {len(self.left)} left as they were"]
        lines += [f"  replaced {c.path or '(the model)'}: {c.what}" for c in self.replaced]
        lines += [f"  left     {c.path or '(the model)'}: {c.what}" for c in self.left]
        return "\n".join(lines)


class Converted(NamedTuple):
    """``model, report = convert(model)``."""

    model: torch.nn.Module
    report: ConversionReport


def convert(model: torch.nn.Module, ops=OPS, backend: str = "custom") -> Converted:
    """``model`` on cnnrepro's kernels: ``converted, report = convert(model)``; ``print(report)``
    lists every replacement and every candidate left, with the reason. ``ops`` picks among
    :data:`OPS`; ``backend="native"`` builds the same structure running PyTorch's ops (to compare)."""
    ops = check_ops(ops)
    backend = check_backend(backend)
    report = ConversionReport()
    model = swap_modules(model, ops, backend, report)
    if "conv_bn_relu" in ops:
        for path, module in model.named_modules():  # each module once, shared ones included
            fuse_owner(module, path, backend, report)
    return Converted(model, report)


def check_ops(ops) -> tuple[str, ...]:
    """``ops`` as a tuple of names among OPS: one name, or a non-empty collection of them."""
    if isinstance(ops, str):
        ops = (ops,)
    if not isinstance(ops, (tuple, list, set, frozenset)) or not ops or any(op not in OPS for op in ops):
        raise ValueError(f"convert: ops must be one or more of {OPS}, got {ops!r}")
    return tuple(ops)


# ---- swaps, module for module ------------------------------------------------------------------


def swapped(module: torch.nn.Module, backend: str) -> torch.nn.Module:
    """Our module with the native one's arguments and training flag."""
    if type(module) is torch.nn.MaxPool2d:
        ours = MaxPool2d(
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            module.return_indices,
            module.ceil_mode,
            backend=backend,
        )
    else:
        ours = LocalResponseNorm(module.size, module.alpha, module.beta, module.k, backend=backend)
    return ours.train(module.training)


def swap_modules(model, ops, backend, report) -> torch.nn.Module:
    """Every nn.MaxPool2d / nn.LocalResponseNorm (as ``ops`` asks) replaced in its parent; a module
    registered at several paths gets one replacement, shared as the original was."""
    kinds = {torch.nn.MaxPool2d: "max_pool", torch.nn.LocalResponseNorm: "lrn"}
    done: dict[int, torch.nn.Module] = {}

    def replacement(module, path):
        if kinds.get(type(module)) not in ops:
            return module
        if id(module) not in done:
            if has_hooks(module):
                report.left.append(Change(path, f"nn.{type(module).__name__} has hooks: kept, so they run"))
                done[id(module)] = module
            else:
                try:
                    done[id(module)] = swapped(module, backend)
                except ValueError as error:  # an argument native takes and our kernel does not
                    report.left.append(Change(path, f"nn.{type(module).__name__} kept: {error}"))
                    done[id(module)] = module
        if done[id(module)] is not module:
            name = type(module).__name__
            report.replaced.append(Change(path, f"nn.{name} -> cnnrepro.nn.{name}"))
        return done[id(module)]

    for parent_path, parent in list(model.named_modules(remove_duplicate=False)):
        for name, child in list(parent.named_children()):
            new = replacement(child, join(parent_path, name))
            if new is not child:
                setattr(parent, name, new)
    return replacement(model, "")


# ---- fusions, through torch.fx -------------------------------------------------------------------


@torch.fx.wrap
def conv_bn_relu_call(x, conv, bn, relu=None, backend="custom"):
    """What a fused forward calls in place of conv -> bn -> relu: the fused op, or the modules
    themselves where fusing would change what they do (a module replaced or hooked since, the
    native backend)."""
    if backend == "native" or not fusable(conv, bn, relu):
        y = bn(conv(x))
        return relu(y) if relu is not None else torch.relu(y)
    return fused_forward(x, conv, bn)


class FusedForward:
    """An owner module's forward with its conv -> BN -> ReLU chains fused: the code torch.fx traced
    from its class's forward, rewritten, and run with the module itself as ``self``. Pickles as
    (owner, backend) and traces again when first called after loading."""

    def __init__(self, owner: torch.nn.Module, backend: str, function=None):
        self.owner, self.backend, self.function = owner, backend, function

    def __call__(self, *args, **kwargs):
        if self.function is None:
            graph, _ = trace_in_both_modes(self.owner)
            rewrite(
                graph, fusable_chains(graph, children_of(self.owner), "", ConversionReport()), self.backend
            )
            self.function = compiled(graph)
        return self.function(self.owner, *args, **kwargs)

    def __reduce__(self):
        return FusedForward, (self.owner, self.backend)


class OwnForwardTracer(torch.fx.Tracer):
    """Traces one module's own forward: every submodule stays a call."""

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        return True


def trace_in_both_modes(module: torch.nn.Module) -> tuple[torch.fx.Graph | None, str]:
    """(graph of ``module``'s own forward, "") when it traces, to the same code in train and eval
    mode and without making tensor constants (which tracing stores on the module); else (None, why).
    The module and its children are left in their modes, with nothing added."""
    flags = {m: m.training for m in module.modules()}
    before = set(vars(module)) | set(module._buffers) | set(module._parameters)
    try:
        graphs = [OwnForwardTracer().trace(module.train(mode)) for mode in (True, False)]
    except Exception as error:  # torch.fx's own TraceError, or whatever the forward raised on proxies
        lines = str(error).strip().splitlines()
        return None, f"its forward cannot be traced ({type(error).__name__}: {lines[0] if lines else ''})"
    finally:
        for m, flag in flags.items():
            m.training = flag
        added = (set(vars(module)) | set(module._buffers) | set(module._parameters)) - before
        for name in added:
            delattr(module, name)
    if added:
        return None, "its forward makes tensor constants"
    if graphs[0].python_code("self").src != graphs[1].python_code("self").src:
        return None, "its forward branches on train/eval mode"
    return graphs[0], ""


def children_of(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return dict(module.named_children())


def fuse_owner(module: torch.nn.Module, path: str, backend: str, report: ConversionReport) -> None:
    """Gives ``module`` a FusedForward where its own forward calls a safe conv -> BN -> ReLU on its
    children; reports why not where it holds candidates (a Conv2d and a BatchNorm2d child)."""
    children = children_of(module)
    kinds = {type(m) for m in children.values()}
    if isinstance(module, OUR_MODULES) or not {torch.nn.Conv2d, torch.nn.BatchNorm2d} <= kinds:
        return
    graph, why = trace_in_both_modes(module)
    if graph is None:
        report.left.append(Change(path, f"{why}: kept as written (its children are converted)"))
        return
    chains = fusable_chains(graph, children, path, report)
    if chains:
        for conv, bn, relu in chains:
            report.replaced.append(Change(join(path, conv.target), f"{chain_name(conv, bn, relu)} fused"))
        rewrite(graph, chains, backend)
        module.forward = FusedForward(module, backend, compiled(graph))


def module_call(node: torch.fx.Node, modules: dict, kind: type) -> bool:
    return node.op == "call_module" and type(modules.get(node.target)) is kind


def is_relu(node: torch.fx.Node, modules: dict) -> bool:
    return (
        module_call(node, modules, torch.nn.ReLU)
        or (node.op == "call_function" and node.target in RELU_FUNCTIONS)
        or (node.op == "call_method" and node.target in RELU_METHODS)
    )


def fusable_chains(graph, modules, path, report) -> list[tuple[torch.fx.Node, ...]]:
    """(conv, bn, relu) nodes of every chain that is safe to fuse; each unsafe one reported."""
    chains = []
    for conv in graph.nodes:
        if not module_call(conv, modules, torch.nn.Conv2d) or len(conv.args) != 1 or conv.kwargs:
            continue
        bn = next((u for u in conv.users if module_call(u, modules, torch.nn.BatchNorm2d)), None)
        if bn is None or bn.args != (conv,) or bn.kwargs:
            continue
        relu = next((u for u in bn.users if is_relu(u, modules)), None)
        if relu is None or relu.args[:1] != (bn,):
            continue  # conv -> BN without ReLU (a residual tail): no fused op for it yet
        why = unsafe_because(conv, bn, relu, modules)
        if why:
            report.left.append(
                Change(join(path, conv.target), f"{chain_name(conv, bn, relu)} not fused: {why}")
            )
        else:
            chains.append((conv, bn, relu))
    return chains


def unsafe_because(conv, bn, relu, modules) -> str:
    """Why fusing this chain would change what the model computes, or ''."""
    if len(conv.users) > 1:
        return f"the convolution's output also feeds {others(conv, bn)}"
    if len(bn.users) > 1:
        return f"the BatchNorm's output also feeds {others(bn, relu)}"
    if len(relu.args) > 1 or set(relu.kwargs) - {"inplace"}:  # torch.fx records F.relu's inplace by name
        return "the ReLU is called with other arguments"
    nodes = [conv, bn] + ([relu] if relu.op == "call_module" else [])
    hooked = [n.target for n in nodes if has_hooks(modules[n.target])]
    if hooked:
        return f"hooks on {', '.join(hooked)}"
    c = modules[conv.target]
    if c.padding_mode != "zeros" or isinstance(c.padding, str):
        return f"padding={c.padding!r}, padding_mode={c.padding_mode!r} (the fused op pads zeros, by numbers)"
    return ""


def others(node: torch.fx.Node, expected: torch.fx.Node) -> str:
    return ", ".join(
        str(u.target if u.op != "output" else "the output") for u in node.users if u is not expected
    )


def chain_name(conv, bn, relu) -> str:
    return f"{conv.target} -> {bn.target} -> {relu.target if relu.op == 'call_module' else 'relu'}"


def rewrite(graph: torch.fx.Graph, chains, backend: str) -> None:
    """Each chain becomes one call of :func:`conv_bn_relu_call` on the same modules, read from the
    owner at call time (``self.conv1``...)."""
    for conv, bn, relu in chains:
        with graph.inserting_before(conv):
            args = [conv.args[0], graph.get_attr(conv.target), graph.get_attr(bn.target)]
            args.append(graph.get_attr(relu.target) if relu.op == "call_module" else None)
            fused = graph.call_function(conv_bn_relu_call, tuple(args), {"backend": backend})
            fused.meta["is_wrapped"] = True  # a later trace of this code keeps it one call
        relu.replace_all_uses_with(fused)
        for node in (relu, bn, conv):
            graph.erase_node(node)
    graph.lint()


def compiled(graph: torch.fx.Graph):
    """The graph's code as a function of (self, *inputs)."""
    code = graph.python_code(root_module="self")
    namespace = dict(code.globals)
    exec(compile(code.src, "<cnnrepro.nn.convert>", "exec"), namespace)  # noqa: S102 (torch.fx's own code)
    return namespace["forward"]


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
