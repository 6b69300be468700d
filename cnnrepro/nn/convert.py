"""``convert(model)``: a user's own network (torchvision's, timm's, hand-written) on cnnrepro's
kernels, in one call, with nothing changed but the speed.

Two kinds of change, each reported with its module path:

- swaps, module for module: ``nn.MaxPool2d`` -> :class:`cnnrepro.nn.MaxPool2d` and
  ``nn.LocalResponseNorm`` -> :class:`cnnrepro.nn.LocalResponseNorm` (stateless: no keys change);
- fusions: every conv -> BatchNorm -> ReLU in a module's ``forward`` code (``nn.Sequential``'s
  included), found by tracing it with torch.fx and rewritten to one call of the fused op. The
  rewritten module is a ``torch.fx.GraphModule`` that holds the very same Conv2d and BatchNorm2d
  objects at the same module paths, so the state_dict keys and the Parameter objects are the
  original's (an optimizer built before conversion still trains the converted model).

A module is rewritten only where that is safe: its forward traces, and traces to the same code in
train and eval mode (a forward that branches on ``self.training`` would otherwise be frozen in one
mode); a module that cannot be traced is kept as written and its children are converted one by one.
A chain is fused only when the convolution's and BatchNorm's outputs feed nothing else, no module
of it has hooks, and the convolution is a plain zero-padded Conv2d; hooks added later make the
fused call run the modules themselves. Every candidate left alone is reported with the reason.

Swapped modules replace the originals in their parents, so the given model is modified in place;
use the returned model (a GraphModule where the root's own forward was rewritten).
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
        model = fuse_unit(model, "", backend, report)
    return Converted(model, report)


def check_ops(ops) -> tuple[str, ...]:
    ops = (ops,) if isinstance(ops, str) else tuple(ops)
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"convert: ops must be among {OPS}, got {unknown}")
    return ops


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
    """What a converted graph calls in place of conv -> bn -> relu: the fused op, or the modules
    themselves where fusing would change what they do (hooks added since, the native backend)."""
    if backend == "native" or not fusable(conv, bn, relu):
        y = bn(conv(x))
        return relu(y) if relu is not None else torch.relu(y)
    return fused_forward(x, conv, bn)


class TraceFailure(Exception):
    def __init__(self, culprit: torch.nn.Module, error: Exception):
        super().__init__(str(error))
        self.culprit, self.error = culprit, error


class Tracer(torch.fx.Tracer):
    """torch.fx's tracer with our modules, modules with hooks and ``leaves`` kept as calls, and the
    innermost module whose forward failed to trace named in a TraceFailure."""

    def __init__(self, leaves: set[int]):
        super().__init__()
        self.leaves, self.stack = leaves, []

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        return (
            id(m) in self.leaves
            or isinstance(m, OUR_MODULES)
            or has_hooks(m)
            or super().is_leaf_module(m, qualname)
        )

    def call_module(self, m, forward, args, kwargs):
        self.stack.append(m)
        try:
            return super().call_module(m, forward, args, kwargs)
        except TraceFailure:
            raise
        except Exception as error:
            raise TraceFailure(m, error) from error
        finally:
            self.stack.pop()


def trace(module: torch.nn.Module, leaves: set[int]) -> torch.fx.Graph:
    try:
        return Tracer(leaves).trace(module)
    except TraceFailure:
        raise
    except Exception as error:  # in the module's own forward, outside any submodule call
        raise TraceFailure(module, error) from error


def trace_in_both_modes(module: torch.nn.Module) -> tuple[torch.fx.Graph | None, str, set[int]]:
    """(graph, "", leaves) when ``module``'s forward traces, to the same code in train and eval
    mode, with the submodules that do not trace kept as calls (``leaves``); else (None, why, _)."""
    flags = {m: m.training for m in module.modules()}
    leaves: set[int] = set()
    try:
        while True:
            try:
                graphs = [trace(module.train(mode), leaves) for mode in (True, False)]
                break
            except TraceFailure as failure:
                if failure.culprit is module or id(failure.culprit) in leaves:
                    first_line = str(failure.error).strip().splitlines()[0] if str(failure.error) else ""
                    return (
                        None,
                        f"its forward cannot be traced ({type(failure.error).__name__}: {first_line})",
                        leaves,
                    )
                leaves.add(id(failure.culprit))
    finally:
        for m, flag in flags.items():
            m.training = flag
    if graphs[0].python_code("self").src != graphs[1].python_code("self").src:
        return None, "its forward branches on train/eval mode", leaves
    return graphs[0], "", leaves


def fuse_unit(module: torch.nn.Module, path: str, backend: str, report: ConversionReport) -> torch.nn.Module:
    """``module`` with every safe conv -> BN -> ReLU of its forward code fused (a GraphModule where
    one was), or ``module`` itself with its children converted one by one where it cannot be traced."""
    if isinstance(module, OUR_MODULES) or not any(True for _ in module.children()):
        return module
    if type(module).forward is torch.nn.Module.forward:  # a container (ModuleList, ModuleDict)
        return fuse_children(module, path, backend, report)
    if has_hooks(module):
        report.left.append(Change(path, "has hooks: its forward kept as written; its children converted"))
        return fuse_children(module, path, backend, report)
    graph, why, leaves = trace_in_both_modes(module)
    if graph is None:
        report.left.append(Change(path, f"{why}: kept as written; its children converted one by one"))
        return fuse_children(module, path, backend, report)
    modules = dict(module.named_modules(remove_duplicate=False))
    chains = fusable_chains(graph, modules, path, report)
    result = rewrite(module, graph, chains, backend, path, report) if chains else module
    # Submodules the trace kept as calls (untraceable or hooked): converted inside, in place.
    for node in graph.nodes:
        inner = modules.get(node.target) if node.op == "call_module" else None
        if (
            inner is not None
            and (id(inner) in leaves or has_hooks(inner))
            and not isinstance(inner, OUR_MODULES)
        ):
            fuse_unit(inner, join(path, node.target), backend, report)
    return result


def fuse_children(module, path, backend, report) -> torch.nn.Module:
    for name, child in list(module.named_children()):
        new = fuse_unit(child, join(path, name), backend, report)
        if new is not child:
            setattr(module, name, new)
    return module


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
    inplace_flag = relu.target is F.relu and len(relu.args) == 2 and isinstance(relu.args[1], bool)
    if len(relu.args) > 1 + inplace_flag or set(relu.kwargs) - {"inplace"}:
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


def rewrite(module, graph, chains, backend, path, report) -> torch.fx.GraphModule:
    """A GraphModule of ``module`` with each chain one call of :func:`conv_bn_relu_call`, holding the
    original Conv2d and BatchNorm2d objects at their paths; state, paths and modes as the original's."""
    for conv, bn, relu in chains:
        with graph.inserting_before(conv):
            args = [conv.args[0], graph.get_attr(conv.target), graph.get_attr(bn.target)]
            args.append(graph.get_attr(relu.target) if relu.op == "call_module" else None)
            fused = graph.call_function(conv_bn_relu_call, tuple(args), {"backend": backend})
        relu.replace_all_uses_with(fused)
        for node in (relu, bn, conv):
            graph.erase_node(node)
        report.replaced.append(Change(join(path, conv.target), f"{chain_name(conv, bn, relu)} fused"))
    graph.lint()
    converted = torch.fx.GraphModule(module, graph, class_name=type(module).__name__)
    keep_unreferenced_state(module, converted)
    for name, original in module.named_modules():
        copy = converted.get_submodule(name) if has_submodule(converted, name) else None
        if copy is not None:
            copy.training = original.training
    return converted


def has_submodule(module: torch.nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def keep_unreferenced_state(original: torch.nn.Module, converted: torch.nn.Module) -> None:
    """Modules with parameters or buffers that the graph no longer calls (a ReLU is dropped freely,
    but a BatchNorm the forward never uses still has keys) attached at their original paths."""
    missing = set(original.state_dict()) - set(converted.state_dict())
    for owner in sorted({key.rsplit(".", 1)[0] for key in missing if "." in key}, key=len):
        if has_submodule(converted, owner):
            continue
        parent = converted
        *shells, last = owner.split(".")
        for name in shells:
            if not hasattr(parent, name):
                parent.add_module(name, torch.nn.Module())
            parent = getattr(parent, name)
        parent.add_module(last, original.get_submodule(owner))
    lost = set(original.state_dict()) - set(converted.state_dict())
    if lost:  # cannot happen while every owner is a module: a safety net, not a code path
        raise RuntimeError(f"convert would lose the state_dict keys {sorted(lost)}")


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
