"""Checkpoints: everything an exact resume needs plus the config that built the model, written
atomically and validated on load with one-line errors; offline probes saved beside them with
their provenance, used only when they match (``load_pretrained``)."""

from __future__ import annotations

import hashlib
import logging
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
from .errors import CheckpointError  # re-exported for callers

FORMAT = "cossl-checkpoint"
VERSION = 2
PROBE_FORMAT = "cossl-probe"
#: config sections that define the model
MODEL_SECTIONS = ("backbone", "head", "co", "method")
#: what else a resume must not change: the optimizer and its schedule, the augmentations (every
#: key), and these keys of the others (batch, epochs, steps, data order)
RESUME_SECTIONS = (*MODEL_SECTIONS, "optim", "augment")
RESUME_KEYS = {"train": ("batch_size", "accum_steps", "epochs", "max_steps_per_epoch", "seed"),
               "data": ("dataset", "limit", "class_list")}

log = logging.getLogger("cossl_train")




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
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} was written by another version of cossl (checkpoint format "
                              f"{state.get('version')}, this one reads {VERSION}); pre-train it again")
    return state


def describe(cfg_dict: dict) -> str:
    b, m = cfg_dict.get("backbone", {}), cfg_dict.get("method", {})
    return f"method={m.get('name')} backbone={b.get('name')} width={b.get('width')} small_image={b.get('small_image')}"


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _first_difference(stored_cfg: dict, cfg: Config, sections: tuple[str, ...],
                      keys: dict[str, tuple[str, ...]]) -> tuple[str, object, object] | None:
    from .config import to_dict

    current = to_dict(cfg)
    pairs = [(s, k) for s in sections for k in current[s]] + [(s, k) for s, ks in keys.items() for k in ks]
    for section, key in pairs:
        old, new = _plain(stored_cfg.get(section, {}).get(key)), _plain(current[section][key])
        if old != new:
            return f"{section}.{key}", old, new
    return None


def check_same_model(stored_cfg: dict, cfg: Config, path: str | Path) -> None:
    """Refuse a checkpoint whose config defines another model than ``cfg``, naming the key."""
    diff = _first_difference(stored_cfg, cfg, MODEL_SECTIONS, {})
    if diff is not None:
        raise CheckpointError(f"{path} was written with {diff[0]}={diff[1]!r} but the config says {diff[2]!r}")


def check_resume_compatible(stored: dict, cfg: Config, world_size: int, path: str | Path) -> None:
    """Refuse to resume with another model, schedule, batch, world size or augmentation, naming the
    first difference: each of them would silently bend the learning-rate and EMA schedules or
    change what is trained."""
    diff = _first_difference(stored.get("config", {}), cfg, RESUME_SECTIONS, RESUME_KEYS)
    if diff is not None:
        raise CheckpointError(f"{path} was written with {diff[0]}={diff[1]!r} but the config says {diff[2]!r}; "
                              "a resume must continue the same run (use another train.out_dir for a new run)")
    if stored.get("world_size") != world_size:
        raise CheckpointError(f"{path} was written by {stored.get('world_size')} process(es), this run has "
                              f"{world_size}; resume with the same number of processes (the global batch and the "
                              "schedules depend on it)")


def file_stamp(path: str | Path) -> dict[str, int]:
    """Modification time and size of a checkpoint file: a record carrying the same stamp was made
    from this very file (a resumed or retrained run has another)."""
    st = Path(path).stat()
    return {"checkpoint_mtime_ns": st.st_mtime_ns, "checkpoint_size": st.st_size}


def digest_weights(digest: Any, module: nn.Module) -> None:
    """Feed ``module``'s state dict (names, dtypes, shapes and bytes, by name) into a hashlib digest."""
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        # via uint8 bytes: numpy has no bfloat16, and the bytes are what identify the weights
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def weights_hash(module: nn.Module) -> str:
    """Content hash (hex) of ``module``'s state dict: equal weights give an equal hash."""
    digest = hashlib.blake2b(digest_size=16)
    digest_weights(digest, module)
    return digest.hexdigest()


def probe_path(checkpoint: str | Path) -> Path:
    """Where the offline linear probe of ``checkpoint`` is saved."""
    return Path(checkpoint).with_suffix(".probe.pt")


def save_probe(checkpoint: str | Path, probe: nn.Linear, encoder: nn.Module, epoch: int, data: dict[str, Any],
               protocol: str, results: dict[str, Any]) -> Path:
    """Save an offline probe beside ``checkpoint`` with its provenance (used only while it matches)."""
    path = probe_path(checkpoint)
    state = {"format": PROBE_FORMAT, "probe": probe.state_dict(), "checkpoint_epoch": int(epoch),
             "encoder_hash": weights_hash(encoder), "data": data, "protocol": protocol, "results": results}
    atomic_write(path, lambda handle: torch.save(state, handle))
    return path


def _offline_probe(path: Path, encoder: nn.Module, epoch: int) -> tuple[dict | None, str]:
    """The stored offline probe of checkpoint ``path`` if it was trained on this checkpoint,
    else (None, why not)."""
    file = probe_path(path)
    if not file.is_file():
        return None, "none saved"
    try:
        stored = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - an unreadable file is reported, never used
        return None, f"{file} is unreadable ({type(e).__name__})"
    if not isinstance(stored, dict) or stored.get("format") != PROBE_FORMAT:
        return None, f"{file} has no provenance record (written by an older cossl)"
    if stored["checkpoint_epoch"] != epoch:
        return None, f"{file} was trained at epoch {stored['checkpoint_epoch']}, the checkpoint is at epoch {epoch}"
    if stored["encoder_hash"] != weights_hash(encoder):
        return None, f"{file} was trained on other encoder weights than the checkpoint holds"
    return stored, "matches"


def load_state(module: nn.Module, state_dict: dict, path: str | Path, stored_cfg: dict | None = None) -> None:
    """``module.load_state_dict`` with a one-line error when the checkpoint is another model.

    A method's state dict of an earlier version is read with today's key names first.
    """
    from .methods.base import SSLMethod, upgrade_state_dict

    if isinstance(module, SSLMethod):
        state_dict = upgrade_state_dict(state_dict)
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
    ``features(x)`` the global representation (pooled, and through the pool MLP when there is
    one), ``local(x)`` the (B, h*w, C) local ones, and ``probe`` a linear probe on the global
    representation (None when the run had no labels and none was trained offline).
    ``probe_source`` says which probe it is; ``probe_data`` the data config it was trained on."""

    encoder: nn.Module
    probe: nn.Linear | None
    config: Config
    epoch: int
    path: Path
    probe_source: str = "none"
    probe_data: dict[str, Any] | None = None

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


def _linear(state: dict) -> nn.Linear:
    probe = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    probe.load_state_dict(state)
    return probe


def load_pretrained(path: str | Path, device: str | torch.device = "cpu") -> Pretrained:
    """Rebuild the online encoder (and its linear probe) of a cossl checkpoint, in eval mode.

    The probe is the offline one saved beside the checkpoint when it was trained on this very
    checkpoint (epoch and encoder weights hash), else the online probe of the run, with a logged
    note when an offline probe was there but did not match.

    >>> from cossl_train import load_pretrained
    >>> model = load_pretrained("runs/demo/co_simclr/seed0/checkpoint.pt")  # doctest: +SKIP
    >>> model.features(images).shape, model.local(images).shape  # (B, C) and (B, C, h, w)  # doctest: +SKIP
    """
    from .methods import build_encoder

    path = Path(path)
    state = load_checkpoint(path)
    cfg = from_dict(state["config"])
    encoder = build_encoder(cfg)
    prefix = "encoder."
    enc_state = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    load_state(encoder, enc_state, path, state["config"])
    epoch = int(state.get("epoch", 0))
    offline, why = _offline_probe(path, encoder, epoch)
    probe, source, data = None, "none", None
    if offline is not None:
        probe, data = _linear(offline["probe"]), offline["data"]
        source = f"offline linear probe ({offline['protocol']})"
    else:
        if why != "none saved":
            log.warning("not using the offline probe: %s; using the online probe instead", why)
        if state.get("probe_linear") is not None:
            probe, source, data = _linear(state["probe_linear"]), "online probe", state["config"].get("data")
    if probe is not None:
        probe = probe.to(device).eval()
    return Pretrained(encoder.to(device).eval(), probe, cfg, epoch, path, source, data)


def load_method(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The whole trained method of a cossl checkpoint (encoder, heads, momentum branch, CO term), in
    eval mode: for diagnostics that read the heads (``cossl_analysis.co_objective``), or to go on
    training its parts in a loop of one's own.

    >>> from cossl_train import load_method
    >>> method = load_method("runs/demo/co_simclr/seed0/checkpoint.pt")  # doctest: +SKIP
    >>> fmap = method.encoder(images)                 # (B, C, h, w) local representations  # doctest: +SKIP
    >>> local = method.co.local_queries(method, fmap)  # (B, h*w, D) its local heads  # doctest: +SKIP
    """
    from .methods import build_method

    path = Path(path)
    state = load_checkpoint(path)
    method = build_method(from_dict(state["config"]))
    load_state(method, state["model"], path, state["config"])
    return method.to(device).eval()
