"""Profiles: how big and how long. A profile may scale width, resolution, data and epochs, never
a network's layer sequence; the report states exactly what each run used (its RunConfig)."""

from dataclasses import dataclass, field, replace

from cnnrepro.data.augment import KerasAugment
from cnnrepro.models.resnet import TABLE2_DEPTHS, UNITS, unit_model


@dataclass(frozen=True)
class Recipe:
    """One model's training recipe within a profile."""

    lr: float
    input_size: int | None = None  # None: the dataset's resolution
    batch_size: int | None = None  # None: the profile's
    width: float | None = None  # None: the profile's
    epochs: int | None = None  # None: the profile's
    model_config: tuple = ()
    schedule: str | None = None
    warmup_steps: int = 0  # the first iterations at a tenth of lr (RunConfig.warmup_steps)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    dataset: str
    epochs: int
    batch_size: int
    width: float
    train_subset: int | None
    test_subset: int | None
    weight_decay: float = 5e-4
    momentum: float = 0.9
    init: str = "model"  # RunConfig.init: "xavier" re-initializes every model as d2l's trainer does
    optimizer: str = "sgd"  # RunConfig.optimizer: "sgd" with the momentum above, or "adam"
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's
    eps: float = 1e-8  # Adam's
    augment: tuple = ()  # RunConfig.augment: Keras ImageDataGenerator arguments (KerasAugment.pairs())
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    recipes: dict[str, Recipe] = field(default_factory=dict)
    default_recipe: Recipe = Recipe(lr=0.05)
    # A suite's model -> the network this profile trains in its place (the d2l profile trains the
    # book's own networks, which its published accuracies were measured on).
    variants: dict[str, str] = field(default_factory=dict)
    # A suite's seeds when the command names none (--seeds); a suite not named here trains seed 0.
    suite_seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # Models this profile's suites leave out, to fit its time; named with --models, they still run.
    left_out: tuple[str, ...] = ()
    # How fast (RunConfig's fields of the same names; the runner's --channels-last, --compile and
    # --amp override them): chosen by measurement, as each changes every run's bits and key.
    channels_last: bool = False
    compile: str = ""
    amp: str = ""

    def model_for(self, model: str) -> str:
        return self.variants.get(model, model)

    def recipe(self, model: str) -> Recipe:
        return self.recipes.get(model, self.default_recipe)

    def seeds(self, suite: str) -> tuple[int, ...]:
        return self.suite_seeds.get(suite, (0,))


# Small inputs for the classic nets: each at (or just above) the smallest resolution its layer
# sequence accepts, LeNet with ReLU and max-pooling (the d2l recipe's sigmoid needs far more steps),
# GoogLeNet with its auxiliary classifiers (their losses weighted 0.3 in training, as the paper).
# Found by scripts/search_recipes.py on seeds 100 and 101 (scripts/recipe_search.csv), never seed 0.
_CPU_RECIPES = {
    # Full width: at the profile's quarter LeNet has 2 and 4 maps and ends near 0.93; at full
    # width (61k parameters, still the cheapest run) 0.971-0.972, and lr 0.1 is worse at either width.
    "lenet5": Recipe(
        lr=0.05, input_size=28, width=1.0, model_config=(("activation", "relu"), ("pooling", "max"))
    ),
    "alexnet": Recipe(lr=0.02, input_size=64),
    # With Glorot FC init (VGG's default now) 0.967-0.968 at lr 0.05 and 0.965-0.968 at 0.02; with
    # the paper's N(0, 0.01) it sat at chance (lr 0.02) or ended at 0.82-0.94 (lr 0.05).
    "vgg11": Recipe(lr=0.05, input_size=32),
    # NiN's class maps pass a ReLU before the global average, so a class whose map goes negative for
    # every image gets no gradient again: short runs stall with classes never predicted (6 or 10
    # epochs at lr 0.005-0.01, or width 0.5: 0.37-0.89). Steps are what it lacks: 20 epochs at lr
    # 0.01 end at 0.949-0.962 (36 s), as good as batch 32 at lr 0.005 for 20 epochs (0.946-0.971,
    # 47 s) and cheaper; batch 32 for 12 epochs at lr 0.01 reaches 0.944-0.955.
    "nin": Recipe(lr=0.01, input_size=68, epochs=20),
    "googlenet": Recipe(lr=0.05, input_size=32, model_config=(("aux_logits", True),)),
    "resnet18": Recipe(lr=0.05, input_size=32),
    "densenet-d2l": Recipe(lr=0.05, input_size=32),
}

# The identity suite (He et al. 2016): Table 2's units at ResNet-20, where the quick profile trains
# them, and at ResNet-110, where the paper does; Table 3's 164- and 1001-layer pairs.
QUICK_DEPTH, PAPER_DEPTH = TABLE2_DEPTHS
IDENTITY_QUICK = tuple(unit_model(QUICK_DEPTH, unit) for unit in UNITS)
IDENTITY_PAPER = tuple(unit_model(PAPER_DEPTH, unit) for unit in UNITS) + tuple(
    unit_model(depth, unit) for depth in (164, 1001) for unit in ("original", "full_preact")
)
# The 2016 paper warms every CIFAR run up with lr 0.01 for 400 iterations, then goes back to 0.1;
# the 2015 paper did so for ResNet-110 alone (until training error fell below 80%, about 400).
HE_WARMUP = Recipe(lr=0.1, warmup_steps=400)

# The Keras tutorials' ImageDataGenerator(shear_range=0.2, zoom_range=0.2, horizontal_flip=True) as
# keras-preprocessing 1.1.2 (standalone Keras 2.2-2.3, and tf.keras then) runs it: shear_range in
# degrees, as since Keras 2.1.3 (so a fifth of a degree; before, in radians, it meant 11.5
# degrees), about its centre (+0.5).
KERAS_TUTORIAL_AUGMENT = KerasAugment(
    shear_range=0.2, zoom_range=0.2, horizontal_flip=True, centre_offset=0.5
).pairs()

PROFILES = {
    "smoke": Profile(
        "smoke",
        "seconds per model: every suite end to end, for CI",
        "mnist5k",
        epochs=1,
        batch_size=32,
        width=0.125,
        train_subset=128,
        test_subset=64,
        # The quick recipes, at the profile's one epoch each.
        recipes={model: replace(recipe, epochs=None) for model, recipe in _CPU_RECIPES.items()},
    ),
    "quick": Profile(
        "quick",
        "the default on a CPU: small widths and inputs, a few epochs on mnist5k",
        "mnist5k",
        epochs=6,
        batch_size=64,
        width=0.25,
        train_subset=None,
        test_subset=None,
        recipes=_CPU_RECIPES,
        default_recipe=Recipe(lr=0.05),
        # Three seeds give the degradation figure its spread and the compare verdict a measured
        # noise level. To pay for them within make run's 15 minutes, the depth-110 pair (a third of
        # the suite's time) is left out: depths 20-56 are Figure 6's plain panel, and plain nets
        # already degrade there.
        # The identity suite: Table 2's five units at depth 20 (Figure 6's shallowest, the cheapest),
        # seeds 0, 1, 2: 15 runs of resnet20's cost (a training step of each unit took 0.8-1.1x
        # resnet20's, one process; its run 14 s in the reference store), about 4 minutes. Measured:
        # 5 min 24 s of CPU on one thread (8 min wall on a 2-core machine loaded by other work).
        suite_seeds={"degradation": (0, 1, 2), "identity": (0, 1, 2)},
        left_out=("plain110", "resnet110", *IDENTITY_PAPER),
    ),
    "paper": Profile(
        "paper",
        "He et al.'s CIFAR-10 recipe (batch 128, lr 0.1 /10 at 32k and 48k iterations, 64k in all, "
        "wd 1e-4, crop+flip; lr 0.01 through ResNet-110's and the identity suite's first 400); "
        "the nets without BatchNorm at lr 0.01 (AlexNet's and VGG's papers'), "
        "AlexNet and NiN upsampled to the smallest input their layers accept",
        "cifar10",
        epochs=164,
        batch_size=128,
        width=1.0,
        train_subset=None,
        test_subset=None,
        weight_decay=1e-4,
        schedule="multistep",
        milestones=(32_000, 48_000),
        default_recipe=Recipe(lr=0.1),
        # lr 0.1 suits the nets with BatchNorm; without it, AlexNet, VGG-11 and NiN sat at chance
        # (mnist5k at this profile's batch, wd and width, 3 epochs: losses 2.31, 2.31, 2.30), and at
        # 0.01, Krizhevsky et al.'s and Simonyan & Zisserman's initial lr, all three trained (AlexNet
        # 0.973 test accuracy after 10 epochs). CIFAR's 32x32 is too small for AlexNet's and NiN's
        # pools: they train on it upsampled, at the quick profile's sizes.
        recipes={
            "lenet5": Recipe(
                lr=0.05, input_size=32, model_config=(("activation", "relu"), ("pooling", "max"))
            ),
            "alexnet": Recipe(lr=0.01, input_size=64),
            "vgg11": Recipe(lr=0.01),
            "nin": Recipe(lr=0.01, input_size=68),
            "googlenet": Recipe(lr=0.1, model_config=(("aux_logits", True),)),  # as the paper trains
        }
        | dict.fromkeys(IDENTITY_PAPER, HE_WARMUP),  # ResNet-110's warm-up serves both papers
        suite_seeds={"identity": (0, 1, 2, 3, 4)},  # the 2016 paper's tables: medians of 5 runs
        # Table 2 at depth 20 is the quick profile's stand-in; ResNet-1001 took the paper 27 hours on
        # two GPUs (Table 4): named with --models, the 1001-layer pair still runs.
        left_out=(*IDENTITY_QUICK[1:], "resnet1001", "preresnet1001"),
    ),
    "keras": Profile(
        "keras",
        "the Keras tutorials: AlexNet, VGG-16, GoogLeNet, ResNet-34 on 17 Flowers at 224x224, Adam, "
        "batch 16, 30 epochs, shear + zoom + flip; LeNet (tanh, max-pool) on MNIST with --dataset mnist",
        "oxflower17",
        epochs=30,
        batch_size=16,
        width=1.0,
        train_subset=None,
        test_subset=None,
        weight_decay=0.0,  # Keras' Adam has none
        init="xavier",  # Keras' default kernel_initializer, glorot_uniform, for every Conv2D and Dense
        schedule="constant",
        optimizer="adam",
        eps=1e-7,  # Keras' Adam epsilon (torch's is 1e-8)
        augment=KERAS_TUTORIAL_AUGMENT,
        recipes={
            "lenet5": Recipe(
                lr=1e-3,
                input_size=28,
                batch_size=32,
                epochs=5,
                model_config=(("activation", "tanh"), ("pooling", "max")),
            ),
            "alexnet": Recipe(lr=1e-3, input_size=224),
            "vgg16": Recipe(lr=1e-5, input_size=224),
            "googlenet": Recipe(lr=1e-5, input_size=224),
            "resnet34": Recipe(lr=1e-3, input_size=224),
        },
    ),
    "d2l": Profile(
        "d2l",
        "d2l chapter 7's recipes on Fashion-MNIST: 10 epochs of plain SGD, Xavier init",
        "fashion-mnist",
        epochs=10,
        batch_size=128,
        width=1.0,
        train_subset=None,
        test_subset=None,
        weight_decay=0.0,
        momentum=0.0,  # the book's torch.optim.SGD(params, lr): no momentum
        init="xavier",  # the book's train_ch6 applies init_cnn to every network (LeNet, NiN, DenseNet too)
        schedule="constant",
        recipes={
            "lenet5": Recipe(lr=0.9, input_size=28, batch_size=256),
            "alexnet-d2l": Recipe(lr=0.01, input_size=224),
            "vgg11-d2l": Recipe(lr=0.05, input_size=224),  # the book's net already has 1/4 of the channels
            "nin": Recipe(lr=0.1, input_size=224),
            "googlenet-d2l": Recipe(lr=0.1, input_size=96),
            "resnet18-d2l": Recipe(lr=0.05, input_size=96, batch_size=256),
            "densenet-d2l": Recipe(lr=0.1, input_size=96, batch_size=256),
        },
        variants={m: f"{m}-d2l" for m in ("alexnet", "vgg11", "googlenet", "resnet18")},
    ),
}
