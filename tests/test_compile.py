"""Our ops inside torch.compile (inductor): every fake kernel returns the strides its kernel
returns, the ops compile in one graph with the eager bits, and every model of the zoo on the
custom backend compiles with fullgraph=True and trains a step as eager does, in both layouts.

Inductor compiles C++ for each graph (tens of seconds per model on 2 cores), so ``make test``
compiles one model of each family; CNNREPRO_COMPILE_ZOO=1 compiles all of them (make
check-compile-zoo)."""

import copy
import os
import re

import pytest
import torch
import torch._functorch.config
import torch._inductor.config
from torch._inductor.utils import run_and_get_code
from torch._subclasses.fake_tensor import FakeTensorMode

from cnnrepro import models, ops
from cnnrepro.train import loss_of

COMPILE_ZOO = os.environ.get("CNNREPRO_COMPILE_ZOO") == "1"
# make test's model of each family: its smallest, or the one the classic suite trains.
FIRST_OF_FAMILY = {
    "AlexNet": "alexnet",
    "DenseNet": "densenet-d2l",
    "GoogLeNet": "googlenet",
    "LeNet": "lenet5",
    "NiN": "nin",
    "Plain-CIFAR": "plain20",
    "PreResNet-CIFAR": "preresnet20",
    "ResNet": "resnet18",
    "ResNet-CIFAR": "resnet20",
    "VGG": "vgg11",
}
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
OPS = (
    "lrn",
    "lrn_backward",
    "max_pool2d_with_argmax",
    "max_pool2d_with_argmax_backward",
    "conv_bn_relu_train",
    "conv_bn_relu_eval",
    "conv_bn_relu_train_backward",
)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Every test compiles afresh: the zoo's Sequentials share one forward, whose compiled
    variants would otherwise pile up to dynamo's recompile limit (and then run eagerly)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# --- The fake kernels' stride contracts ------------------------------------------------------------


def layouts(shape):
    """An input of ``shape`` in every layout a compiled graph may hand an op: dense NCHW, dense
    channels-last, strided (a view every other column), and permuted (NHCW)."""
    torch.manual_seed(0)
    n, c, h, w = shape
    yield "contiguous", torch.randn(shape)
    yield "channels_last", torch.randn(shape).contiguous(memory_format=torch.channels_last)
    yield "strided", torch.randn(n, c, h + 1, 2 * w)[:, :, 1:, ::2]
    yield "permuted", torch.randn(n, h, c, w).transpose(1, 2)


FAKE_MODE = FakeTensorMode(allow_non_fake_inputs=True)


def real_and_fake(op, *args):
    """The op's outputs from its kernel and from its fake kernel (on fake copies of the tensors)."""
    mode = FAKE_MODE
    fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
    real = op(*args)
    with mode:
        fake = op(*fake_args)
    as_tuple = lambda out: out if isinstance(out, tuple | list) else (out,)  # noqa: E731
    return as_tuple(real), as_tuple(fake)


def assert_same_strides(op_name, real, fake, exact=True):
    """Shapes equal, and strides: exactly, or (``exact=False``) in every dimension longer than 1
    (the only strides an index ever multiplies)."""
    for i, (r, f) in enumerate(zip(real, fake, strict=True)):
        assert r.shape == f.shape, f"{op_name} output {i}: shape {tuple(r.shape)} vs fake {tuple(f.shape)}"
        strides = [(a, b) for a, b, n in zip(r.stride(), f.stride(), r.shape, strict=True) if exact or n > 1]
        assert all(a == b for a, b in strides), (
            f"{op_name} output {i} of shape {tuple(r.shape)}: strides {r.stride()}, fake {f.stride()}"
        )


SHAPES = [(2, 5, 6, 7), (1, 5, 6, 7), (2, 1, 6, 7), (2, 5, 1, 7), (3, 4, 2, 2)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fake_kernels_return_the_strides_the_kernels_return(shape):
    """Inductor lays out the buffers around an op from its fake kernel's strides (and re-runs it
    on the layouts it picked for the inputs): a fake kernel that got one stride wrong would have
    the compiled code read the real output wrongly. Every op, every input layout (channels-last in,
    channels-last out), size-1 dimensions included."""
    C = torch.ops.cnnrepro
    window = ([min(2, shape[2]), 2], [1, 1], [0, 0], [1, 1])
    gamma, beta = torch.rand(3) + 0.5, torch.randn(3)
    running_mean, running_var = torch.randn(3), torch.rand(3) + 0.5
    weights = {
        "1x1": torch.randn(3, shape[1], 1, 1),
        "3x3": torch.randn(3, shape[1], 3, 3),
        "3x3 channels-last": torch.randn(3, shape[1], 3, 3).contiguous(memory_format=torch.channels_last),
    }
    for layout, x in layouts(shape):
        where = f"input {layout}"
        assert_same_strides(f"lrn, {where}", *real_and_fake(C.lrn, x, 3, 1e-2, 0.75, 1.0))
        for grad_layout, dy in layouts(shape):
            assert_same_strides(
                f"lrn_backward, {where}, grad {grad_layout}",
                *real_and_fake(C.lrn_backward, dy, x, 3, 1e-2, 0.75, 1.0),
            )
        real, fake = real_and_fake(C.max_pool2d_with_argmax, x, *window, False)
        assert_same_strides(f"max_pool2d_with_argmax, {where}", real, fake)
        values, indices = real
        for grad_layout, dy in layouts(tuple(values.shape)):
            for index_layout in LAYOUTS.values():
                assert_same_strides(
                    f"max_pool2d_with_argmax_backward, {where}, grad {grad_layout}",
                    *real_and_fake(
                        C.max_pool2d_with_argmax_backward,
                        dy,
                        indices.contiguous(memory_format=index_layout),
                        list(x.shape),
                        *window,
                        False,
                    ),
                )
        for kind, w in weights.items():
            conv = ([1, 1], [w.shape[-1] // 2] * 2, [1, 1], 1, 1e-5)
            where = f"input {layout}, weight {kind}"
            assert_same_strides(
                f"conv_bn_relu_eval, {where}",
                *real_and_fake(
                    C.conv_bn_relu_eval, x, w, None, gamma, beta, running_mean, running_var, *conv
                ),
            )
            if shape[0] * shape[2] * shape[3] == 1:
                continue  # training needs more than one value per channel
            real, fake = real_and_fake(C.conv_bn_relu_train, x, w, None, gamma, beta, *conv)
            assert_same_strides(f"conv_bn_relu_train, {where}", real, fake)
            _, z, mean, var = real
            # The backward's outputs follow x, the weight and conv_out's layout (the gradient is made
            # dense like conv_out): every gradient layout once, against each conv_out layout.
            z_layouts = [z, z.contiguous(memory_format=torch.channels_last), z.contiguous(), z]
            masks = [[True, True, False], [False, True, True], [True, False, False], [True, True, True]]
            for (grad_layout, dy), conv_out, mask in zip(
                layouts(tuple(z.shape)), z_layouts, masks, strict=True
            ):
                # grad_weight's size-1 strides are aten's own meta kernel's (native's
                # convolution_backward's too), which oneDNN does not always follow: exact=False.
                assert_same_strides(
                    f"conv_bn_relu_train_backward, {where}, grad {grad_layout}, mask {mask}",
                    *real_and_fake(
                        C.conv_bn_relu_train_backward, dy, x, w, conv_out, mean, var, gamma, beta, *conv, mask
                    ),
                    exact=False,
                )


# --- The ops in one compiled graph -----------------------------------------------------------------


def block(x, w, gamma, beta, running_mean, running_var, training):
    """Each op once: conv-BN-ReLU (training or inference), LRN, max-pool with argmax."""
    y = ops.conv_bn_relu(x, w, None, gamma, beta, running_mean, running_var, training, 0.1, 1e-5, 1, 1)
    y = ops.lrn(y, 3, 1e-2, 0.75, 1.0)
    return ops.max_pool2d_with_argmax(y, 3, 2, 1)[0]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_ops_compile_in_one_graph_with_the_eager_bits(layout):
    """Inductor calls our kernels themselves: forward, backward and inference are bitwise eager's,
    and the output keeps the input's layout (no copy into another). The running statistics' update
    is ours in Python (mul_, add_), which inductor fuses into one kernel: within float32 rounding."""
    torch.manual_seed(0)
    memory_format = LAYOUTS[layout]
    x = torch.randn(4, 3, 9, 9).contiguous(memory_format=memory_format)
    w = torch.randn(8, 3, 3, 3).contiguous(memory_format=memory_format)
    gamma, beta, grad = torch.rand(8) + 0.5, torch.randn(8), torch.randn(4, 8, 5, 5)
    stats = {"eager": (torch.zeros(8), torch.ones(8)), "compiled": (torch.zeros(8), torch.ones(8))}
    compiled = torch.compile(block, backend="inductor", fullgraph=True, dynamic=False)
    results = {}
    for name, fn in (("eager", block), ("compiled", compiled)):
        leaves = [t.detach().clone().requires_grad_() for t in (x, w, gamma, beta)]
        out = fn(*leaves, *stats[name], True)
        (out * grad).sum().backward()
        with torch.no_grad():  # from the same statistics (the training step's differ by rounding)
            mean, var = torch.randn(8, generator=seeded(1)), torch.rand(8, generator=seeded(2)) + 0.5
            inference = fn(x, w, gamma, beta, mean, var, False)
        results[name] = (out, *(t.grad for t in leaves), *stats[name], inference)
    for what, e, c in zip(
        ("output", "grad x", "grad w", "grad gamma", "grad beta", "running_mean", "running_var", "inference"),
        results["eager"],
        results["compiled"],
        strict=True,
    ):
        if what.startswith("running"):
            torch.testing.assert_close(c, e, rtol=2e-7, atol=0, msg=f"{layout}: {what}")
        else:
            assert torch.equal(e, c), f"{layout}: {what} differs from eager's"
    out, inference = results["compiled"][0], results["compiled"][-1]
    assert out.is_contiguous(memory_format=memory_format) and inference.is_contiguous(
        memory_format=memory_format
    )


def test_the_ops_declare_a_flexible_layout():
    for name in OPS:
        tags = getattr(torch.ops.cnnrepro, name).default.tags
        assert torch.Tag.flexible_layout in tags and torch.Tag.needs_exact_strides not in tags, name


def test_inductors_layout_optimization_runs_through_the_ops():
    """On the CPU inductor moves every convolution to channels-last; our ops between two of them
    then take and give channels-last as they come, with no copy back to the NCHW eager saw: no
    kernel of the compiled code is there for them (inductor names a copy after the op it feeds)."""
    torch.manual_seed(0)
    conv1, conv2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
    weight, gamma, beta = torch.randn(8, 8, 3, 3), torch.rand(8) + 0.5, torch.randn(8)
    mean, var = torch.randn(8), torch.rand(8) + 0.5

    def net(x):
        y = ops.conv_bn_relu(conv1(x), weight, None, gamma, beta, mean, var, False, 0.1, 1e-5, 1, 1)
        y = ops.max_pool2d_with_argmax(ops.lrn(y, 3), 2)[0]
        return conv2(y).relu()

    x = torch.randn(2, 3, 12, 12)
    # Compiled afresh: inductor's caches do not key on op tags, so a graph cached before would do.
    no_cache = torch._inductor.config.patch(fx_graph_cache=False)
    with no_cache, torch._functorch.config.patch(enable_autograd_cache=False), torch.no_grad():
        out, (code,) = run_and_get_code(torch.compile(net, fullgraph=True, dynamic=False), x)
        torch.testing.assert_close(out, net(x), rtol=1e-5, atol=1e-5)
    kernels = re.findall(r"^(cpp_fused_\w+) = ", code, re.M)
    assert kernels and "extern_kernels.convolution" in code
    assert not [k for k in kernels if re.search("lrn|max_pool|conv_bn_relu", k)], kernels
    assert all(call in code for call in ("cnnrepro.lrn", "cnnrepro.max_pool2d", "cnnrepro.conv_bn_relu_eval"))


# --- Every model of the zoo ------------------------------------------------------------------------

# Compiled vs eager, per tensor: |compiled - eager| <= RTOL * max|eager| + ATOL, elementwise over the
# logits and over each gradient and buffer. Inductor generates the rest of the graph (BatchNorm where
# native, adds, ReLUs, the average pool, the loss) and sums in other orders than eager's kernels.
# A gradient may also differ by NOISE times the model's largest gradient: a conv bias right before
# a BatchNorm has a gradient of 0 up to the rounding of a sum over the whole batch.
RTOL, ATOL, NOISE = 1e-4, 1e-7, 1e-5
# Nets whose gradients at init are rounding-sensitive noise (tests/test_models.py): 110 layers
# without shortcuts, 1001 layers of original units. Compared in float64, where rounding stays small.
ROUNDING_NOISE = ("plain110", "resnet1001")


def zoo():
    for name in models.list_models():
        family = models.model_info(name).family
        whole_zoo_only = (
            ()
            if FIRST_OF_FAMILY.get(family) == name
            else (pytest.mark.skipif(not COMPILE_ZOO, reason="the whole zoo: CNNREPRO_COMPILE_ZOO=1"),)
        )
        for layout in LAYOUTS:
            yield pytest.param(name, layout, marks=whole_zoo_only, id=f"{name}-{layout}")


def test_each_family_has_a_model_in_make_test():
    families = {models.model_info(name).family for name in models.list_models()}
    assert set(FIRST_OF_FAMILY) == families
    assert all(models.model_info(name).family == family for family, name in FIRST_OF_FAMILY.items())


def train_step(model, x, labels):
    """Forward in training mode, GoogLeNet's auxiliary losses included, and backward."""
    model.train()
    output = model(x)
    loss_of(output, labels, 0.3).backward()
    return output[0] if isinstance(output, tuple) else output


def assert_close(what, compiled, eager, noise=0.0):
    compiled, eager = compiled.double(), eager.double()
    bound = RTOL * eager.abs().max().item() + ATOL + noise
    worst = (compiled - eager).abs().max().item()
    assert worst <= bound, f"{what}: compiled differs from eager by {worst:.3g} (> {bound:.3g})"


@pytest.mark.parametrize("name, layout", zoo())
def test_every_model_compiles_whole_and_trains_a_step_as_eager(name, layout):
    """Custom backend, width 1/8, the smallest input the layers take (16 px at least), batch 4 (a
    BatchNorm over fewer values per channel turns rounding into noise):
    ``torch.compile(fullgraph=True)`` (a graph break raises) trains one step, and the logits, the
    loss's gradient of every parameter and the running statistics it leaves are eager's; then the
    same in inference. Dropout draws eager's masks (inductor's fallback_random)."""
    info = models.model_info(name)
    size = max(info.min_input_size, 16)
    extra = {"input_size": size} if models.builder_accepts(name, "input_size") else {}
    dtype = torch.float64 if name in ROUNDING_NOISE else torch.float32
    torch.manual_seed(0)
    eager = models.get_model(name, num_classes=5, width=0.125, **extra).to(
        dtype=dtype, memory_format=LAYOUTS[layout]
    )
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, fullgraph=True, dynamic=False)
    x = torch.randn(4, info.in_channels, size, size, dtype=dtype).contiguous(memory_format=LAYOUTS[layout])
    labels = torch.tensor([1, 3, 0, 4])
    with torch._inductor.config.patch(fallback_random=True):
        logits = {}
        for key, model in (("eager", eager), ("compiled", compiled)):
            torch.manual_seed(1)
            logits[key] = train_step(model, x, labels)
        assert_close("logits", logits["compiled"], logits["eager"])
        named = dict(compiled_model.named_parameters())
        noise = NOISE * max(p.grad.abs().max().item() for p in eager.parameters())
        for key, p in eager.named_parameters():
            assert_close(f"grad {key}", named[key].grad, p.grad, noise)
        buffers = dict(compiled_model.named_buffers())
        for key, b in eager.named_buffers():
            assert_close(key, buffers[key], b)
        with torch.no_grad():
            eager.eval(), compiled.eval()
            assert_close("inference logits", compiled(x), eager(x))
