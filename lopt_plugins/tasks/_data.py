"""How the built-in tasks get their data: a dataset name looked up in the plugin registry.

A task that takes a dataset name builds it with the factory registered under
that name (kind ``dataset``), so a plugin's dataset serves every built-in task
exactly as the built-in ones do; a ``lopt_core.Datasets`` is used as is. What a
task needs to know about its data (image shape, number of classes, vocabulary
size) is read from the built ``Datasets``: its ``extra_info`` or abstract batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from lopt_core import Datasets
from lopt_core.registry import UnknownEntryError, get_registry
from lopt_core.validation import positive_int, positive_int_tuple

# The built-in builders are imported only for what is fixed before any registry is
# loaded: the signatures of presets and the names of tasks on a given Datasets. A name
# given to a task is always looked up in the registry. (This imports no data library:
# digits imports scikit-learn when it is first built.)
from lopt_plugins.datasets import BUILDERS as BUILTIN_DATASETS

# What each kind of task's batches look like, for the error that follows an unknown name.
BATCH_FORMATS = {
    "image": "{'image': float32 [B, H, W, C], 'label': int32 [B]}",
    "text": "{'obs', 'target'} int32 [B, T]",
}


class UnknownDatasetError(UnknownEntryError, ValueError):
    """A task was given a dataset name that no plugin registered.

    A ``ValueError`` too, like the tasks' other argument errors; the message is
    the registry's (close matches, the registered names, the plugins loaded).
    """


def display_name(name: str) -> str:
    """``fashion_mnist`` -> ``FashionMnist``: a dataset name as it appears in task names."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def given_datasets_tag(datasets: Datasets) -> str:
    """How a ``Datasets`` passed to a task appears in the task's name.

    A built-in dataset's name reads as when it is looked up by name; any other
    name is kept as it is (``extra_info["name"]``, else ``Custom``).
    """
    name = str(datasets.extra_info.get("name", "Custom"))
    return display_name(name) if name in BUILTIN_DATASETS else name


def takes_argument(builder: Callable[..., Any], name: str) -> bool:
    """Whether ``builder`` accepts the keyword argument ``name`` (True if it has no signature)."""
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def build_dataset(name: Any, kind: str, **kwargs: Any) -> Datasets:
    """The dataset registered as ``name`` (kind ``dataset``), built with ``kwargs``.

    An argument the builder does not take is left out when it is None (such as
    ``data_dir`` of a bundled dataset) and is an error otherwise. ``kind``
    (``image`` or ``text``) words the errors. An unknown name raises
    ``UnknownDatasetError``, which lists the registered names closest to it.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"dataset must be the name of a registered dataset or a lopt_core.Datasets, "
            f"got {type(name).__name__}: {name!r}."
        )
    try:
        entry = get_registry().entry("dataset", name)
    except UnknownEntryError as e:
        hint = ""
        if name in BUILTIN_DATASETS:  # e.g. LOPT_PLUGINS lists the tasks but not the datasets
            hint = (
                f"{name!r} is a built-in dataset, registered by lopt's 'datasets' plugin "
                "(lopt_plugins.datasets), which this registry did not load.\n"
            )
        raise UnknownDatasetError(
            f"Unknown {kind} dataset {name!r}. {e}\n{hint}"
            f"Or pass a lopt_core.Datasets of {BATCH_FORMATS[kind]} batches."
        ) from e
    call = {}
    for arg, value in kwargs.items():
        if takes_argument(entry.factory, arg):
            call[arg] = value
        elif arg == "data_dir" and value is not None:
            raise ValueError(
                f"The {name!r} dataset is bundled and takes no data_dir (got {value!r}): the "
                f"builder of {entry.describe()} has no data_dir argument."
            )
        elif value is not None:
            article = "an" if kind[0] in "aeiou" else "a"
            raise ValueError(
                f"The {entry.describe()} takes no {arg} argument, which {kind} tasks build "
                f"their dataset with (got {arg}={value!r}). Is {name!r} {article} {kind} dataset?"
            )
    return entry.factory(**call)


def size_tag(image_size: tuple[int, int]) -> str:
    """``8`` for 8x8, ``8x12`` for 8x12: the image size as it appears in task names."""
    h, w = image_size
    return str(h) if h == w else f"{h}x{w}"


def image_datasets(
    dataset: str | Datasets, image_size: Any, batch_size: int, data_dir: str | None
) -> tuple[Datasets, str, tuple[int, int]]:
    """Resolve ``dataset`` to ``(Datasets, tag for names, image size)``.

    A name is built by ``build_dataset`` with ``batch_size``, ``image_size`` and
    ``data_dir`` (the built-in builders cache, so tasks share data); a
    ``Datasets`` is used as is. Either way its images must be ``image_size``.
    """
    image_size = positive_int_tuple(image_size, "image_size")
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (height, width), got {image_size!r}.")
    batch_size = positive_int(batch_size, "batch_size")
    if isinstance(dataset, Datasets):
        built, display, what = dataset, given_datasets_tag(dataset), "The Datasets given"
    else:
        built = build_dataset(
            dataset, "image", batch_size=batch_size, image_size=image_size, data_dir=data_dir
        )
        display, what = display_name(dataset), f"The {dataset!r} dataset"
    shape = image_shape(built)
    if tuple(shape[:2]) != image_size:
        raise ValueError(
            f"{what} has images of shape {shape}, but image_size={image_size}; "
            f"pass image_size={tuple(shape[:2])} so that the task describes its data."
        )
    sep = "_" if display[-1:].isdigit() else ""  # Cifar10_8, not Cifar108
    return built, f"{display}{sep}{size_tag(image_size)}", image_size


def image_shape(datasets: Datasets) -> tuple[int, int, int]:
    """``(height, width, channels)`` of a dataset's images, from ``extra_info`` or its batch."""
    shape = datasets.extra_info.get("image_shape")
    if shape is None and datasets.abstract_batch is not None:
        try:
            shape = datasets.abstract_batch["image"].shape[1:]
        except (KeyError, TypeError, AttributeError):
            shape = None
    if shape is None or len(shape) != 3:
        raise ValueError(
            "An image task needs the image shape (H, W, C) of its dataset, in "
            "Datasets.extra_info['image_shape'] or as abstract_batch['image'] of shape "
            f"[B, H, W, C]; got extra_info={datasets.extra_info!r}, "
            f"abstract_batch={datasets.abstract_batch!r}."
        )
    return tuple(int(s) for s in shape)


def extra_int(datasets: Datasets, key: str, task: str) -> int:
    """``datasets.extra_info[key]`` as an int, or an error saying which task needs it."""
    if key not in datasets.extra_info:
        raise ValueError(
            f"{task} needs Datasets.extra_info[{key!r}], but the dataset's extra_info has only "
            f"{sorted(datasets.extra_info)}."
        )
    return int(datasets.extra_info[key])
