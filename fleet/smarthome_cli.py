"""`fleetlearn smarthome`: write the generated smart-home command set (fleet/smarthome.py).

Without `--artifacts` the folders hold raw text (train.jsonl / test.jsonl), which agents tokenise
themselves. With `--artifacts DIR` (an exported text model) each folder also gets train.npz /
test.npz of token ids from that model's tokenizer, and DIR/test.npz the unseen households': what
`fleetlearn simulate --data OUT --artifacts DIR` reads.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument("--households", type=int, default=20, help="devices (default 20)")
    p.add_argument("--alpha", type=float, default=0.5, help="intent skew, Dirichlet alpha")
    p.add_argument("--train", type=int, default=40, help="training commands per household")
    p.add_argument("--test", type=int, default=20, help="held-out commands per household")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--artifacts", type=Path, help="a text model: also write token-id .npz files")


def run(args: argparse.Namespace) -> int:
    from fleet.smarthome import INTENTS, write_smarthome

    folders = write_smarthome(
        args.out,
        args.households,
        alpha=args.alpha,
        train_per_home=args.train,
        test_per_home=args.test,
        seed=args.seed,
    )
    if args.artifacts is not None:
        from agent.artifacts import load_artifacts
        from agent.text_data import TextTokenizer, load_text_split
        from protocol.errors import ConfigError

        manifest = load_artifacts(args.artifacts).manifest
        if manifest.tokenizer is None:
            raise ConfigError(f"--artifacts {args.artifacts}: {manifest.model_name} reads no text")
        tokenizer = TextTokenizer(args.artifacts / manifest.tokenizer, manifest.input_shape[0])
        for folder in [*folders, args.out]:
            for split in ("train", "test") if folder != args.out else ("test",):
                x, y = load_text_split(folder / f"{split}.jsonl", tokenizer, len(INTENTS))
                np.savez(folder / f"{split}.npz", x=x, y=y)
    print(f"wrote {len(folders)} households and the unseen-household test set under {args.out}")
    return 0
