"""cnnrepro.nn.convert: a user's own network on our kernels, nothing changed but the speed. Every
converted model is compared with a deep copy of its original: outputs and gradients in train and
eval, running statistics, state_dict both ways, Parameter objects, modes per child, hooks, a short
training run, torch.compile; what was left alone is reported with the reason."""

import copy
import importlib.util

import pytest
import torch

from cnnrepro import nn

TOL = dict(rtol=1e-4, atol=1e-4)
TOL64 = dict(rtol=1e-7, atol=1e-9)


class Hand(torch.nn.Module):
    """A hand-written net whose forward calls conv, bn, relu in turn (torchvision's style), with a
    residual tail (conv -> bn -> add -> relu: nothing to fuse), a pool and an LRN in a Sequential."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.relu = torch.nn.ReLU(inplace=True)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(8)
        self.pool = torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.head = torch.nn.Sequential(
            torch.nn.Conv2d(8, 6, 1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(), torch.nn.LocalResponseNorm(3)
        )

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)) + y)
        return self.head(self.pool(y)).mean(dim=(2, 3))


class Untraceable(torch.nn.Module):
    """Data-dependent control flow in a forward that holds a chain; convertible children below it."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3)
        self.body = Hand()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3), torch.nn.ReLU())

    def forward(self, x):
        x = self.stem(torch.relu(self.bn(self.conv(x))))
        return self.body(x) if x.sum() > 0 else -self.body(x)


class ModeDependent(Hand):
    """A forward that branches on self.training: tracing would freeze one mode."""

    def forward(self, x):
        y = super().forward(x)
        return y * 0.5 if self.training else y


def converted_pair(model, **kwargs):
    torch.manual_seed(0)
    original = model
    converted, report = nn.convert(copy.deepcopy(original), **kwargs)
    return original, converted, report


def step(model, x):
    """Output, input gradient and parameter gradients of one forward + backward (dropout's masks
    drawn from the same seed)."""
    model.zero_grad()
    torch.manual_seed(0)
    x = x.detach().clone().requires_grad_()
    y = model(x)
    y.backward(torch.cos(y))
    return y.detach(), x.grad, {n: p.grad for n, p in model.named_parameters()}


def assert_same_model(original, converted, x, tol=TOL):
    """Train and eval, outputs, gradients and every buffer (running statistics) alike."""
    for mode in (True, False):
        original.train(mode), converted.train(mode)
        (y1, g1, p1), (y2, g2, p2) = step(original, x), step(converted, x)
        torch.testing.assert_close(y2, y1, **tol)
        torch.testing.assert_close(g2, g1, **tol)
        assert p1.keys() == p2.keys()
        for name in p1:
            torch.testing.assert_close(p2[name], p1[name], **tol, msg=name)
        for (n1, b1), (n2, b2) in zip(original.named_buffers(), converted.named_buffers(), strict=True):
            assert n1 == n2
            torch.testing.assert_close(b2, b1, **tol, msg=n1)


def test_a_hand_written_net_is_fused_swapped_and_computes_the_same():
    original, converted, report = converted_pair(Hand())
    assert report.count("fused") == 2, report  # conv1 -> bn1 -> relu and the head's; not the tail
    assert report.count("MaxPool2d") == 1 and report.count("LocalResponseNorm") == 1
    assert {c.path for c in report.replaced} == {"conv1", "head.0", "pool", "head.3"}
    assert "conv1 -> bn1 -> relu fused" in str(report)
    assert_same_model(original, converted, torch.randn(4, 3, 9, 9))


def test_state_dict_keys_parameters_and_modes_are_the_originals():
    model = Hand()
    model.bn1.eval()  # a frozen BatchNorm inside a training model stays frozen
    original = copy.deepcopy(model)
    params = {id(p) for p in model.parameters()}
    converted, _ = nn.convert(model)
    assert {id(p) for p in converted.parameters()} == params, "an optimizer built before still trains it"
    assert converted.state_dict().keys() == original.state_dict().keys()
    assert not converted.get_submodule("bn1").training and converted.get_submodule("bn2").training
    torch.testing.assert_close(converted(torch.ones(2, 3, 9, 9)), original(torch.ones(2, 3, 9, 9)), **TOL)
    converted.load_state_dict(original.state_dict())  # both ways, strict
    original.load_state_dict(converted.state_dict())


def test_a_short_training_run_ends_with_the_originals_weights():
    original, converted, _ = converted_pair(Hand())
    x, target = torch.randn(8, 3, 9, 9), torch.randn(8, 6)
    for model in (original, converted):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), target).backward()
            optimizer.step()
    for (name, a), (_, b) in zip(original.state_dict().items(), converted.state_dict().items(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=name)


def test_an_untraceable_model_is_kept_and_its_children_converted():
    original, converted, report = converted_pair(Untraceable())
    assert converted.__class__ is Untraceable, "kept as written"
    assert any(c.path == "" and "cannot be traced" in c.what for c in report.left), report
    assert {c.path for c in report.replaced if "fused" in c.what} == {"stem.0", "body.conv1", "body.head.0"}
    assert "forward" not in vars(converted), "its own forward is the class's"
    assert_same_model(original, converted, torch.randn(4, 3, 9, 9))


def test_a_forward_that_branches_on_the_mode_is_not_frozen_in_one():
    original, converted, report = converted_pair(ModeDependent())
    assert any(c.path == "" and "train/eval" in c.what for c in report.left), report
    assert report.count("fused") == 1  # the head's Sequential, converted on its own
    assert_same_model(original, converted, torch.randn(4, 3, 9, 9))


class SharedOutput(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return torch.relu(y) + y


def test_unsafe_chains_are_left_and_said_why():
    reflect = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), torch.nn.BatchNorm2d(4), torch.nn.ReLU()
    )
    hooked = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    hooked[1].register_forward_hook(lambda *_: None)
    for model, reason in (
        (SharedOutput(), "the BatchNorm's output also feeds"),
        (reflect, "padding_mode='reflect'"),
        (hooked, "hooks on 1"),
    ):
        original, converted, report = converted_pair(model)
        assert report.count("fused") == 0 and any(reason in c.what for c in report.left), report
        assert_same_model(original, converted, torch.randn(2, 3, 7, 7))


def test_a_hook_added_after_conversion_still_runs():
    _, converted, _ = converted_pair(Hand())
    seen = []
    converted.get_submodule("bn1").register_forward_hook(lambda m, i, o: seen.append(o.shape))
    converted(torch.randn(2, 3, 9, 9))
    assert seen == [torch.Size([2, 8, 9, 9])]


def test_a_hooked_pool_is_kept_and_bad_ops_are_refused():
    model = torch.nn.Sequential(torch.nn.MaxPool2d(2))
    model[0].register_forward_hook(lambda *_: None)
    converted, report = nn.convert(model)
    assert type(converted[0]) is torch.nn.MaxPool2d and "has hooks" in str(report)
    for bad in (["conv_bn_relu", "softmax"], (), None):
        with pytest.raises(ValueError, match="ops must be one or more of"):
            nn.convert(model, ops=bad)


def test_only_the_ops_asked_for_are_converted():
    original, converted, report = converted_pair(Hand(), ops="max_pool")
    assert [c.path for c in report.replaced] == ["pool"] and "forward" not in vars(converted)
    assert_same_model(original, converted, torch.randn(4, 3, 9, 9))


def test_the_owner_keeps_its_class_attributes_and_hooks():
    model = Untraceable()
    model.temperature = 2.0  # a plain attribute; a method is the class's
    calls = []
    model.body.register_forward_hook(lambda *_: calls.append("body"))
    converted, _ = nn.convert(model)
    assert converted is model and isinstance(converted.body, Hand) and converted.temperature == 2.0
    converted.body.head[0].register_forward_hook(lambda *_: calls.append("head conv"))  # after conversion
    converted(torch.randn(2, 3, 9, 9))
    assert calls == ["head conv", "body"], "hooks on owners and, added later, on fused modules run"


def test_saved_loaded_copied_and_converted_twice_it_computes_the_same(tmp_path):
    original, converted, _ = converted_pair(Hand())
    torch.save(converted, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    again, report = nn.convert(copy.deepcopy(converted))
    assert report.count("fused") == 2
    for other in (loaded, copy.deepcopy(converted), again):
        assert_same_model(copy.deepcopy(original), other, torch.randn(4, 3, 9, 9))


def test_a_module_shared_at_two_paths_is_converted_once_and_stays_shared():
    block = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.BatchNorm2d(3), torch.nn.ReLU())
    original, converted, report = converted_pair(torch.nn.Sequential(block, block))
    assert converted[0] is converted[1] and [c.path for c in report.replaced] == ["0.0"]
    assert_same_model(original, converted, torch.randn(2, 3, 5, 5))


class CountingBatchNorm(torch.nn.BatchNorm2d):
    calls = 0

    def forward(self, x):
        CountingBatchNorm.calls += 1
        return super().forward(x)


def test_a_module_replaced_after_conversion_runs_itself():
    _, converted, _ = converted_pair(Hand())
    old = converted.bn1
    converted.bn1 = CountingBatchNorm(8)
    converted.bn1.load_state_dict(old.state_dict())
    converted(torch.randn(2, 3, 9, 9))
    assert CountingBatchNorm.calls == 1, "the fused op stands only for the exact modules it was made for"


class MakesConstants(Hand):
    def forward(self, x):
        return super().forward(x) * torch.tensor(2.0)


def test_a_forward_making_tensor_constants_is_left_and_left_unchanged():
    model = MakesConstants()
    before = set(vars(model))
    converted, report = nn.convert(model)
    assert set(vars(converted)) == before, "tracing added nothing to the user's module"
    assert any(c.path == "" and "tensor constants" in c.what for c in report.left), report


def test_torch_compile_of_the_converted_model():
    original, converted, _ = converted_pair(Hand())
    compiled = torch.compile(converted, backend="aot_eager", fullgraph=True)
    x = torch.randn(4, 3, 9, 9)
    torch.testing.assert_close(compiled(x), original(x), **TOL)


def test_the_native_backend_builds_the_same_structure_running_native_ops():
    original, converted, report = converted_pair(Hand(), backend="native")
    assert report.count("fused") == 2 and converted.get_submodule("pool").backend == "native"
    assert_same_model(original, converted, torch.randn(4, 3, 9, 9))


# ---- torchvision's models (in the venv that has torchvision: make check-cuda) ---------------------

needs_torchvision = pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None,
    reason="torchvision is not installed (make check-cuda has it)",
)


def basic_conv_count(model) -> int:
    """GoogLeNet's conv -> bn -> relu blocks: one per BasicConv2d."""
    return sum(type(m).__name__ == "BasicConv2d" for m in model.modules())


@needs_torchvision
@pytest.mark.parametrize(
    "name, fused, pools",
    [
        ("resnet18", lambda m: 1 + 8, 1),  # the stem and conv1 -> bn1 -> relu of each BasicBlock
        ("resnet50", lambda m: 1 + 2 * 16, 1),  # the stem and two per Bottleneck
        ("vgg11_bn", lambda m: 8, 5),
        ("googlenet", basic_conv_count, 4 + 9),  # four between stages, one in each Inception
        ("densenet121", lambda m: 1 + 58, 1),  # the stem and each layer's 1x1 conv -> norm2 -> relu2
        ("alexnet", lambda m: 0, 3),
    ],
)
def test_torchvisions_models(name, fused, pools):
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=10)
    original, converted, report = converted_pair(model)
    assert report.count("fused") == fused(model), report
    assert report.count("MaxPool2d") == pools, report
    assert converted.state_dict().keys() == original.state_dict().keys()
    converted.load_state_dict(original.state_dict())
    # float64: in float32, ResNet-50's 2x2 maps in layer4 give BatchNorm 8 values a channel, whose
    # backward amplifies rounding differences far past any fixed tolerance.
    original.double(), converted.double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    original.eval(), converted.eval()
    torch.testing.assert_close(converted(x), original(x), **TOL64)
    if name != "googlenet":  # its train-mode output is a namedtuple with the aux heads
        assert_same_model(original, converted, x, TOL64)
