"""Suites: which models a run of the runner trains, turned into RunConfigs by a profile."""

from cnnrepro.experiments.profiles import IDENTITY_PAPER, IDENTITY_QUICK, Profile
from cnnrepro.models import model_info
from cnnrepro.train import RunConfig

SUITES = {
    # One network of each family in the lineage.
    "classic": ["lenet5", "alexnet", "vgg11", "nin", "googlenet", "resnet18", "densenet-d2l"],
    # He et al. Figure 6: plain nets against their residual twins, at every depth the figure shows.
    "degradation": [f"{kind}{depth}" for depth in (20, 32, 44, 56, 110) for kind in ("plain", "resnet")],
}

# Suites that run only when named (--suite), never under --all: each is longer than make run's time.
OPT_IN_SUITES = {
    # He et al. 2016 (Identity Mappings): Table 2's five units at ResNet-20 (the quick profile's
    # depth) and ResNet-110 (the paper's); Table 3's original vs full pre-activation at 164 and 1001
    # layers. Each profile leaves out the depths it does not train.
    "identity": [*IDENTITY_QUICK, *IDENTITY_PAPER],
    # The Keras tutorials' 17 Flowers networks (the keras profile; its LeNet trains on MNIST, named
    # with --models lenet5 --dataset mnist).
    "keras": ["alexnet", "vgg16", "googlenet", "resnet34"],
}


def plan_runs(
    models: list[str],
    profile: Profile,
    seeds: list[int],
    dataset: str | None = None,
    backend="custom",
    epochs: int | None = None,
) -> list[RunConfig]:
    """The RunConfig of every (model, seed) under the profile (which may train its own variant of a
    model: the d2l profile trains the book's networks)."""
    runs = []
    for model in map(profile.model_for, models):
        recipe = profile.recipe(model)
        for seed in seeds:
            runs.append(
                RunConfig(
                    model=model,
                    dataset=dataset or profile.dataset,
                    seed=seed,
                    epochs=epochs or recipe.epochs or profile.epochs,
                    batch_size=recipe.batch_size or profile.batch_size,
                    lr=recipe.lr,
                    momentum=profile.momentum,
                    weight_decay=profile.weight_decay,
                    init=profile.init,
                    optimizer=profile.optimizer,
                    betas=profile.betas,
                    eps=profile.eps,
                    augment=profile.augment,
                    schedule=recipe.schedule or profile.schedule,
                    milestones=profile.milestones,
                    warmup_steps=recipe.warmup_steps,
                    backend=backend,
                    width=recipe.width or profile.width,
                    input_size=recipe.input_size,
                    train_subset=profile.train_subset,
                    test_subset=profile.test_subset,
                    model_config=recipe.model_config,
                    channels_last=profile.channels_last,
                    compile=profile.compile,
                    amp=profile.amp,
                )
            )
    return runs


def too_small_inputs(configs: list[RunConfig], resolution: int) -> list[str]:
    """A line per model whose planned input (its recipe's size, else the dataset's ``resolution``)
    is smaller than its layer sequence accepts: such a run could only fail, at its first batch."""
    small = {}
    for config in configs:
        size, least = config.input_size or resolution, model_info(config.model).min_input_size
        if size < least:
            small[config.model] = f"{config.model} at {size}x{size} (its layers need {least}x{least} or more)"
    return list(small.values())
