"""The datasets CNN Lens knows by name: their classes, statistics, files and descriptions."""

from __future__ import annotations

from dataclasses import dataclass

from dashboard.base.errors import ShapeError, UnknownNameError
from dashboard.data.splits import DatasetInfo


@dataclass(frozen=True)
class _Registered:
    info: DatasetInfo
    loader: str  # "idx" (MNIST family) | "cifar" (python pickled batches)
    torchvision_class: str  # attribute of torchvision.datasets that downloads the files
    label_key: str = ""  # CIFAR batches: "labels" | "fine_labels" | "coarse_labels"
    names_key: str = ""  # CIFAR meta: "label_names" | "fine_label_names" | "coarse_label_names"


def _words(text: str) -> tuple[str, ...]:
    """Long class lists read better as text than as one quoted name per line."""
    return tuple(text.split())


# Published class orders (torchvision's; CIFAR's own meta files list the same).
_CIFAR10_CLASSES = _words("airplane automobile bird cat deer dog frog horse ship truck")
_CIFAR100_FINE = _words(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
    butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch
    crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
    keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
    mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
    porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
    snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
    tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"""
)


_CIFAR100_COARSE = _words(
    """aquatic_mammals fish flowers food_containers fruit_and_vegetables
    household_electrical_devices household_furniture insects large_carnivores
    large_man-made_outdoor_things large_natural_outdoor_scenes large_omnivores_and_herbivores
    medium_mammals non-insect_invertebrates people reptiles small_mammals trees vehicles_1
    vehicles_2"""
)


_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


_CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
_CIFAR100_STD = (0.2673, 0.2564, 0.2762)
_CIFAR100_DESC = (
    "60,000 32×32 colour images of 100 classes in 20 superclasses (A. Krizhevsky, 2009); "
    "torchvision downloads cifar-100-python.tar.gz from www.cs.toronto.edu/~kriz into "
    "<data root>/cifar-100-python"
)


def _cifar100(
    name: str, title: str, classes: tuple[str, ...], level: str, what: str
) -> _Registered:
    """CIFAR-100 read at one of its two label levels: the same files, another label column."""
    return _Registered(
        DatasetInfo(
            name=name,
            title=title,
            classes=classes,
            channels=3,
            size=32,
            mean=_CIFAR100_MEAN,
            std=_CIFAR100_STD,
            augment=True,
            description=f"{_CIFAR100_DESC}; labelled with the {what}",
            folder="cifar-100-python",
            native_size=32,
        ),
        loader="cifar",
        torchvision_class="CIFAR100",
        label_key=f"{level}_labels",
        names_key=f"{level}_label_names",
    )


_REGISTRY: dict[str, _Registered] = {
    "mnist": _Registered(
        DatasetInfo(
            name="mnist",
            title="MNIST",
            classes=tuple(str(d) for d in range(10)),
            channels=1,
            size=28,
            mean=(0.1307,),
            std=(0.3081,),
            augment=False,
            description=(
                "70,000 28×28 grayscale handwritten digits (Y. LeCun, C. Cortes, C. Burges); "
                "torchvision downloads them into <data root>/MNIST/raw, and a real 10,000-image "
                "sample ships in trained/data/mnist-sample for offline use"
            ),
            folder="MNIST/raw",
            native_size=28,
        ),
        loader="idx",
        torchvision_class="MNIST",
    ),
    "fashion-mnist": _Registered(
        DatasetInfo(
            name="fashion-mnist",
            title="Fashion-MNIST",
            classes=_FASHION_CLASSES,
            channels=1,
            size=28,
            mean=(0.2860,),
            std=(0.3530,),
            augment=False,
            description=(
                "70,000 28×28 grayscale Zalando product photos in 10 classes (Xiao et al., "
                "2017); torchvision downloads them into <data root>/FashionMNIST/raw"
            ),
            folder="FashionMNIST/raw",
            native_size=28,
        ),
        loader="idx",
        torchvision_class="FashionMNIST",
    ),
    "cifar10": _Registered(
        DatasetInfo(
            name="cifar10",
            title="CIFAR-10",
            classes=_CIFAR10_CLASSES,
            channels=3,
            size=32,
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
            augment=True,
            description=(
                "60,000 32×32 colour images in 10 classes (A. Krizhevsky, 2009); torchvision "
                "downloads cifar-10-python.tar.gz from www.cs.toronto.edu/~kriz into "
                "<data root>/cifar-10-batches-py (a JPEG copy in <data root>/cifar10-jpg "
                "also works), and a real 3,000-image sample ships in "
                "trained/data/cifar10-sample for offline use"
            ),
            folder="cifar-10-batches-py",
            native_size=32,
        ),
        loader="cifar",
        torchvision_class="CIFAR10",
        label_key="labels",
        names_key="label_names",
    ),
    "cifar100": _cifar100("cifar100", "CIFAR-100", _CIFAR100_FINE, "fine", "100 fine classes"),
    "cifar100-coarse": _cifar100(
        "cifar100-coarse",
        "CIFAR-100 (20 superclasses)",
        _CIFAR100_COARSE,
        "coarse",
        "20 coarse superclasses",
    ),
}


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


_CIFAR_FILES = {
    "cifar-10-batches-py": {
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test": ("test_batch",),
        "meta": "batches.meta",
    },
    "cifar-100-python": {"train": ("train",), "test": ("test",), "meta": "meta"},
}


_CIFAR10_JPEG_FOLDER = "cifar10-jpg"
_SPLITS = ("train", "test")


def dataset_names() -> list[str]:
    """Registry names. A user's own images are named `folder:PATH` (see module docstring)."""
    return list(_REGISTRY)


# CIFAR-100's published grouping: each superclass (coarse label) holds five fine classes. The
# files carry both labels per image; this table lets fine predictions be read as superclasses.
_CIFAR100_GROUPS = {
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}


def cifar100_fine_to_coarse() -> tuple[int, ...]:
    """For each of CIFAR-100's 100 fine labels (`cifar100`), its superclass label
    (`cifar100-coarse`), both in the published class orders."""
    coarse_of = {
        fine: _CIFAR100_COARSE.index(coarse)
        for coarse, members in _CIFAR100_GROUPS.items()
        for fine in members.split()
    }
    return tuple(coarse_of[fine] for fine in _CIFAR100_FINE)


def _unknown(name: str) -> UnknownNameError:
    valid = ", ".join(_REGISTRY)
    return UnknownNameError(f"unknown dataset {name!r}: choose one of {valid}, or folder:PATH")


def _lookup(name: str) -> _Registered:
    key = name.strip().lower().replace("_", "-")
    if key not in _REGISTRY:
        raise _unknown(name)
    return _REGISTRY[key]


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise UnknownNameError(f"unknown split {split!r}: choose train or test")


def _check_size(input_size: int | None) -> None:
    if input_size is not None and not 4 <= input_size <= 1024:
        raise ShapeError(f"input size {input_size} is out of range: use 4 to 1024")
