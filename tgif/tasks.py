"""The one table of fusion tasks and their two modalities, used by the CLI, the app, evaluation and captions.

A *task choice* names a task and its pair of modalities: ``ivf`` (infrared + visible), ``mif-ct``,
``mif-pet``, ``mif-spect`` (MRI + CT / PET / SPECT), ``mef`` (under- + over-exposed) and ``mff``
(near + far focus). ``mif`` is an alias of ``mif-ct``, except that :func:`resolve_task` lets the
folders a pair's files sit in (``.../pet/0001.png``) pick the MIF modality. The network only knows the
four tasks (:attr:`TaskSpec.task`): MIF uses the IVF model, and the captions name the modality.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tgif.errors import UnknownNameError

#: The four fusion tasks the network, the losses and the datasets know.
TASKS: tuple[str, ...] = ("ivf", "mif", "mef", "mff")


@dataclass(frozen=True)
class TaskSpec:
    """One task choice.

    Attributes:
        key: the choice's name (``"mif-pet"``).
        task: the fusion task the network and losses know (``"mif"``).
        folders: the dataset folder names of source 1 and source 2 (``("mri", "pet")``).
        modalities: how captions name them (``("MRI", "PET")``).
        label: the app's selector label.
    """

    key: str
    task: str
    folders: tuple[str, str]
    modalities: tuple[str, str]
    label: str


#: Every task choice, in the app's order.
TASK_SPECS: dict[str, TaskSpec] = {spec.key: spec for spec in (
    TaskSpec("ivf", "ivf", ("ir", "vi"), ("infrared", "visible"), "IVF · infrared + visible"),
    TaskSpec("mif-ct", "mif", ("mri", "ct"), ("MRI", "CT"), "MIF · MRI + CT"),
    TaskSpec("mif-pet", "mif", ("mri", "pet"), ("MRI", "PET"), "MIF · MRI + PET"),
    TaskSpec("mif-spect", "mif", ("mri", "spect"), ("MRI", "SPECT"), "MIF · MRI + SPECT"),
    TaskSpec("mef", "mef", ("under", "over"), ("under-exposed", "over-exposed"), "MEF · under- + over-exposed"),
    TaskSpec("mff", "mff", ("near", "far"), ("near-focus", "far-focus"), "MFF · near + far focus"),
)}
#: Other accepted names.
TASK_ALIASES: dict[str, str] = {"mif": "mif-ct"}
#: Every name :func:`task_spec` accepts (for CLI choices).
TASK_NAMES: tuple[str, ...] = (*TASK_SPECS, *TASK_ALIASES)


def task_spec(name: str) -> TaskSpec:
    """The task choice called ``name`` (a key of :data:`TASK_SPECS` or an alias).

    Raises:
        UnknownNameError: an unknown name.
    """
    key = TASK_ALIASES.get(name.strip().lower(), name.strip().lower())
    try:
        return TASK_SPECS[key]
    except KeyError:
        raise UnknownNameError(f"unknown task {name!r}; choose from {', '.join(TASK_NAMES)}") from None


def spec_for_folders(folders: Sequence[str]) -> TaskSpec | None:
    """The task choice whose two modality folders are ``folders`` (case-insensitive), or None."""
    wanted = tuple(f.lower() for f in folders)
    return next((spec for spec in TASK_SPECS.values() if spec.folders == wanted), None)


def resolve_task(name: str | None, paths: Sequence[str | Path] = ()) -> TaskSpec:
    """The task choice for a pair: ``name`` when given, else the one the files' folders name, else IVF.

    ``mif`` (without a modality) takes the modality from the folders when they name one
    (``.../mri/x.png`` + ``.../pet/x.png`` is ``mif-pet``); a full name (``mif-ct``) always wins.

    Raises:
        UnknownNameError: an unknown name.
    """
    from_folders = spec_for_folders([Path(p).parent.name for p in paths]) if len(paths) == 2 else None
    if name is None:
        return from_folders or TASK_SPECS["ivf"]
    spec = task_spec(name)
    if name.strip().lower() in TASK_ALIASES and from_folders is not None and from_folders.task == spec.task:
        return from_folders
    return spec
