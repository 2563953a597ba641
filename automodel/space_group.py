"""The search spaces as Hydra's config group `search_space`.

search_spaces/*.yaml stay at the repository's top level (inside the wheel, the package's
search_spaces/), where a user finds and edits them, not in conf/search_space/: so before
composing, each is stored in Hydra's ConfigStore under the group, and so is a file the command
line names by path. Composition then applies `search_space.params.lr.high=0.1`,
`~search_space.params.momentum` and `+search_space.params.l1=...` like any override.

A leaf: errors are one-line ValueErrors, which config.compose reports as ConfigErrors.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

GROUP = "search_space"
# The ConfigStore name of a space given by path: not a file stem in search_spaces/, so a
# user's copy of mlp.yaml never shadows the shipped one.
_USER = "_file"


def is_path(choice: str) -> bool:
    """Whether a search_space choice names a file (anything ending in .yaml, or with a /)."""
    return choice.endswith((".yaml", ".yml")) or os.sep in choice


def resolve(choice: str, spaces_dir: Path) -> Path:
    """The file of a search_space choice: in `spaces_dir` by name, or the path given."""
    if is_path(choice):
        path = Path(choice)
        if not path.is_file():
            raise ValueError(f"search_space file {choice!r} does not exist")
        return path
    path = spaces_dir / f"{choice}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in spaces_dir.glob("*.yaml"))
        raise ValueError(
            f"unknown search_space {choice!r}; known: {', '.join(known)} "
            "(or a path to a .yaml file)"
        )
    return path


def register(overrides: list[str], spaces_dir: Path) -> tuple[list[str], str | None]:
    """Store the spaces of `spaces_dir`, and a file the overrides choose by path, under the
    group; return the overrides with that path replaced by its stored name, and the path
    (None when the last choice is a name)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for path in sorted(spaces_dir.glob("*.yaml")):
        store.store(group=GROUP, name=path.stem, node=read(path))
    out, user_file = [], None
    for override in overrides:
        key, eq, value = override.partition("=")
        if eq and key.lstrip("+") == GROUP and value not in ("", "null"):
            path = resolve(value, spaces_dir)
            user_file = value if is_path(value) else None
            if user_file is not None:
                store.store(group=GROUP, name=_USER, node=read(path))
                override = f"{key}={_USER}"
        out.append(override)
    return out, user_file


def chosen(choice: str | None, user_file: str | None) -> str | None:
    """What the user chose, from Hydra's record of the choice: a name, or the file's path."""
    return user_file if choice == _USER else choice


def read(path: Path) -> dict:
    """A space file as a mapping (empty when the file is); spaces.parse checks its contents
    once the overrides are applied."""
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as err:  # YAML syntax errors come in many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not valid YAML: {first}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(
            f"{path}: a search space must be a mapping with keys family, params, enqueue"
        )
    return raw


def unknown_key(key: str, composed: DictConfig | None) -> str:
    """An override of a space key the composed space lacks: the keys of its deepest parent
    that exists, and how to add it."""
    parent = key.rpartition(".")[0]
    node = OmegaConf.select(composed, parent) if composed is not None else None
    while not isinstance(node, DictConfig) and "." in parent and composed is not None:
        parent = parent.rpartition(".")[0]
        node = OmegaConf.select(composed, parent)
    if not isinstance(node, DictConfig):
        return f"unknown key {key!r} (add it with +{key}=...)"
    keys = ", ".join(map(str, node.keys()))
    return f"unknown key {key!r}; keys in {parent}: {keys} (add it with +{key}=...)"
