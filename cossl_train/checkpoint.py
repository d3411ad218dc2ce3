"""Checkpoints: written atomically, validated on load, with one-line errors.

A checkpoint holds everything an exact resume needs (model with its momentum targets,
optimizer, online probe, step counters, RNG states) plus the config that built the model, so
``load_pretrained`` can rebuild a ready encoder from the file alone.
"""

from __future__ import annotations

import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .atomic import atomic_write
from .config import Config, from_dict

FORMAT = "cossl-checkpoint"
VERSION = 1
#: config sections that define the model; a resume that changes them is refused
MODEL_SECTIONS = ("backbone", "head", "co", "method")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here; the message is one line."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, flushed to
    disk, then renamed over the old one, so a killed run never leaves a half-written file."""
    state = {"format": FORMAT, "version": VERSION, **state}
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is foreign
        raise CheckpointError(f"{path} is not a readable checkpoint (not a PyTorch file, or truncated)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line error
        text = str(e)
        if "Weights only load failed" in text:
            why = "it holds Python objects other than tensors and plain containers"
        else:
            why = (text.strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"{path} is not a readable checkpoint ({why})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cossl checkpoint (no '{FORMAT}' marker)")
    return state


def describe(cfg_dict: dict) -> str:
    b, m = cfg_dict.get("backbone", {}), cfg_dict.get("method", {})
    return f"method={m.get('name')} backbone={b.get('name')} width={b.get('width')} small_image={b.get('small_image')}"


def check_resume_compatible(stored: dict, cfg: Config, path: str | Path) -> None:
    """Refuse to resume with a different model definition, naming the first differing key."""
    from .config import to_dict

    current = to_dict(cfg)
    for section in MODEL_SECTIONS:
        for key, value in current[section].items():
            old = stored.get(section, {}).get(key)
            if isinstance(value, tuple):
                value = list(value)
            if isinstance(old, tuple):
                old = list(old)
            if old != value:
                raise CheckpointError(
                    f"{path} was written with {section}.{key}={old!r} but the config says {value!r}; "
                    "resume needs the same model (use another train.out_dir for a new run)"
                )


def load_state(module: nn.Module, state_dict: dict, path: str | Path, stored_cfg: dict | None = None) -> None:
    """``module.load_state_dict`` with a one-line error when the checkpoint is another model."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shape = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if missing or unexpected or shape:
        what = f" ({describe(stored_cfg)})" if stored_cfg else ""
        if shape:
            k = shape[0]
            detail = f"{k} has shape {tuple(state_dict[k].shape)} in the file, {tuple(own[k].shape)} here"
        elif missing:
            detail = f"{len(missing)} tensors missing, e.g. {missing[0]}"
        else:
            detail = f"{len(unexpected)} unexpected tensors, e.g. {unexpected[0]}"
        raise CheckpointError(f"{path} holds another architecture{what}: {detail}")
    module.load_state_dict(state_dict)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


@dataclass
class Pretrained:
    """A ready model from a checkpoint: ``encoder(x)`` gives the feature map of [0, 1] images,
    ``features(x)`` the pooled global representation, ``local(x)`` the (B, h*w, C) local ones,
    and ``probe`` the online linear probe (None when the run had no labels)."""

    encoder: nn.Module
    probe: nn.Linear | None
    config: Config
    epoch: int
    path: Path

    def features(self, x: torch.Tensor) -> torch.Tensor:
        from .encoder import pool_features

        return pool_features(self.encoder, self.encoder(x))

    def local(self, x: torch.Tensor) -> torch.Tensor:
        from .encoder import local_features

        return local_features(self.encoder(x))

    def classifier(self) -> nn.Module:
        """encoder + pooling + probe as one module mapping [0, 1] images to logits."""
        if self.probe is None:
            raise CheckpointError(
                f"{self.path} has no linear probe (the run had no labels); run "
                f"`cossl-train linear-probe {self.path}` to train one"
            )
        return _Classifier(self.encoder, self.probe)


class _Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, probe: nn.Linear) -> None:
        super().__init__()
        self.encoder, self.probe = encoder, probe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .encoder import pool_features

        return self.probe(pool_features(self.encoder, self.encoder(x)))


def load_pretrained(path: str | Path, device: str | torch.device = "cpu") -> Pretrained:
    """Rebuild the online encoder (and its linear probe) of a cossl checkpoint, in eval mode.

    A linear probe trained offline by ``cossl-train linear-probe`` (saved beside the checkpoint
    as ``<name>.probe.pt``) is preferred over the online probe when present.
    """
    from .methods import build_encoder

    path = Path(path)
    state = load_checkpoint(path)
    cfg = from_dict(state["config"])
    encoder = build_encoder(cfg)
    prefix = "encoder."
    enc_state = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    load_state(encoder, enc_state, path, state["config"])
    probe = None
    offline = path.with_suffix(".probe.pt")
    probe_state = None
    if offline.is_file():
        probe_state = torch.load(offline, map_location="cpu", weights_only=True)["probe"]
    elif state.get("probe") is not None:
        probe_state = state["probe"]
    if probe_state is not None:
        probe = nn.Linear(probe_state["weight"].shape[1], probe_state["weight"].shape[0])
        probe.load_state_dict(probe_state)
        probe = probe.to(device).eval()
    return Pretrained(encoder.to(device).eval(), probe, cfg, int(state.get("epoch", 0)), path)
