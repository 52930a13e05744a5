"""How much of a padded batch is padding, with and without length groups (world pairs, tether's batches).

    python bench/padding.py            # batch 16 pairs (32 sequences), 50 batches
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import emit

from tether.data.collate import length_groups
from tether.engine.loop import batch_indices
from tether.models.chat import tokenize_prompt_completion
from tether.models.tokenizer import build_tokenizer
from tether.world.datasets import preference_rows
from tether.world.spec import WorldConfig, build_world


def main() -> None:
    """Parse the arguments, time each padding mode, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the results here, with the machine and command")
    args = parser.parse_args()
    tokenizer = build_tokenizer()
    rows = preference_rows(build_world(WorldConfig()), 2000)
    lengths = [(len(tokenize_prompt_completion(tokenizer, r["prompt"], r["chosen"]).input_ids),
                len(tokenize_prompt_completion(tokenizer, r["prompt"], r["rejected"]).input_ids)) for r in rows]
    result = {}
    for groups in (1, 2, 4, 8):
        real = padded = 0
        for step in range(args.batches):
            batch = [n for i in batch_indices(len(rows), args.batch, step, 0) for n in lengths[i]]
            real += sum(batch)
            padded += sum(len(g) * max(batch[i] for i in g) for g in length_groups(batch, groups))
        result[f"groups={groups}"] = {"padding_share": round(1 - real / padded, 3)}
    emit({"sequences_per_batch": 2 * args.batch, **result}, args.json)


if __name__ == "__main__":
    main()
