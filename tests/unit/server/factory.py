"""Small real inputs for server tests: a manifest and ClientUpdate bytes via the real codecs."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol.artifacts import INFERENCE_MODEL, INITIAL_WEIGHTS, MANIFEST_FILE, sha256_hex
from protocol.manifest import Manifest, ParamSpec, encode_manifest
from protocol.messages import ClientUpdate, encode_update, encode_vector
from protocol.signing import generate_keypair, private_key_to_pem

__all__ = ["make_artifacts", "make_manifest", "update_bytes", "write_key"]


def make_manifest(n: int = 6) -> Manifest:
    """A two-tensor model with n parameters in total (n even)."""
    return Manifest(
        model_name="tiny",
        params=(ParamSpec("w", (n // 2,)), ParamSpec("b", (n - n // 2,))),
        input_name="x",
        input_shape=(n // 2,),
        num_classes=2,
    )


def update_bytes(
    manifest: Manifest,
    delta: np.ndarray | list[float],
    *,
    device: str = "dev-1",
    seq: int = 1,
    base: int = 0,
    samples: int = 10,
    codec: dict[str, Any] | None = None,
    model_id: str | None = None,
) -> bytes:
    vec = np.asarray(delta, np.float32)
    msg = ClientUpdate(
        model_id=model_id or manifest.model_id,
        base_version=base,
        device_id=device,
        seq=seq,
        num_samples=samples,
        local_steps=1,
        delta=encode_vector(vec, codec or {"name": "float32"}),
        metrics={"loss": 0.5},
    )
    return encode_update(msg)


def make_artifacts(folder: Path, n: int = 6, inference: bytes = b"not used") -> Manifest:
    """A minimal artifacts folder the server can load: manifest, initial weights, inference."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, np.zeros(n, np.float32), allow_pickle=False)
    files = {INITIAL_WEIGHTS: buf.getvalue(), INFERENCE_MODEL: inference}
    base = make_manifest(n)
    manifest = dataclasses.replace(base, files={k: sha256_hex(v) for k, v in files.items()})
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / MANIFEST_FILE).write_bytes(encode_manifest(manifest))
    return manifest


def write_key(folder: Path) -> tuple[Path, Ed25519PublicKey]:
    private, public = generate_keypair()
    path = folder / "fleet.key"
    path.write_bytes(private_key_to_pem(private))
    return path, public
