"""Torchvision as the oracle: its models' weights transplanted into ours give the same logits, on
both backends. Runs where torchvision is installed (``make check-cuda`` installs it beside its
CUDA build of torch); the key map's own checks run everywhere."""

import pytest
import torch

from cnnrepro import models

SIZE = {"vgg": 224}  # VGG's first FC is sized for 224 (torchvision pools to 7x7); the rest: any size


def test_models_torchvision_lacks_are_refused_by_name():
    with pytest.raises(ValueError, match="load into vgg11.*got lenet5"):
        models.torchvision_key_map(models.get_model("lenet5"))
    with pytest.raises(ValueError, match="got Linear"):
        models.torchvision_key_map(torch.nn.Linear(2, 2))


def test_key_map_targets_every_fused_unit_once():
    net = models.get_model("resnet18")
    key_map = models.torchvision_key_map(net)
    assert key_map["bn1.running_var"] == "conv1.1.running_var"
    assert key_map["layer2.0.conv1.weight"] == "layer2.0.conv1.0.weight"
    assert key_map["layer2.0.bn1.weight"] == "layer2.0.conv1.1.weight"
    assert "layer2.0.downsample.1.weight" not in key_map, "torchvision's own name, unchanged"
    assert len(set(key_map.values())) == len(key_map)
    vgg = models.torchvision_key_map(models.get_model("vgg11_bn"))
    assert vgg["features.4.weight"] == "features.2.0.weight" and vgg["features.5.bias"] == "features.2.1.bias"


@pytest.mark.parametrize("backend", ["custom", "native"])
@pytest.mark.parametrize("name", sorted(models.TORCHVISION_MODELS))
def test_torchvision_weights_give_torchvision_logits(name, backend):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    config = {"aux_logits": True, "init_weights": True} if name == "googlenet" else {}
    theirs = getattr(torchvision.models, name)(weights=None, num_classes=10, **config).eval()
    for buffer_name, buffer in theirs.named_buffers():  # non-trivial running statistics
        if buffer_name.endswith("running_mean"):
            buffer.normal_(0, 0.1)
        elif buffer_name.endswith("running_var"):
            buffer.uniform_(0.5, 2.0)
    ours_config = models.TORCHVISION_MODELS[name] | dict(models.model_info(name).optional_parts)
    ours = models.get_model(name, num_classes=10, backend=backend, **ours_config).eval()
    models.load_torchvision_state_dict(ours, theirs.state_dict())
    size = SIZE.get(name[:3], 64)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_a_layout_that_does_not_fit_says_what_to_build():
    torchvision = pytest.importorskip("torchvision")
    theirs = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    ours = models.get_model("googlenet")  # the paper's 5x5 branch, not torchvision's 3x3
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with pytest.raises(ValueError, match=r"build ours with \{'branch5_kernel': 3\}.*branch3\.1\.0\.weight"):
        models.load_torchvision_state_dict(ours, theirs.state_dict())
    assert all(torch.equal(before[k], v) for k, v in ours.state_dict().items()), "nothing loaded"
