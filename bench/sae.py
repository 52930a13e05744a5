"""Training an SAE: tether's trainer beside SAELens (MIT), on the same activations, same shape, same steps.

Activations: every token of ``--texts`` world conversations at ``--site`` of ``--model`` (10% held out).
Both train a TopK SAE (``--width`` features, ``--k`` per token, batches of ``--batch`` rows, ``--epochs``
passes, Adam at ``--lr``, constant then decayed in tether, constant in SAELens) on one thread pool, one after
the other; the figures are training rows a second (wall clock of the training loop, best of ``--repeats``)
and, on the held-out rows, explained variance and L0. SAELens runs in its own interpreter
(``--saelens-python``, a virtual environment with ``pip install sae-lens``: it is not one of tether's
dependencies); that interpreter also loads the SAE tether saved, with SAELens's own ``SAE.load_from_disk``,
and the largest difference between the two libraries' reconstructions of the held-out rows is reported
(the file format is SAELens's).

    python bench/sae.py --saelens-python /path/to/venv/bin/python --json docs/results/bench/sae_cpu.json
    python bench/sae.py --model world:tiny --texts 40 --epochs 1       # a quick look, tether only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import emit

SAELENS = r"""
import json, sys, time
import torch
from sae_lens import SAE, SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.config import SAETrainerConfig, LoggingConfig

args = json.loads(sys.argv[1])
torch.manual_seed(0)
train, held = torch.load(args["train"]), torch.load(args["held"])

def batches():
    g = torch.Generator().manual_seed(0)
    while True:
        order = torch.randperm(len(train), generator=g)
        for i in range(0, len(order) - args["batch"] + 1, args["batch"]):
            yield train[order[i:i + args["batch"]]]

result = {"version": __import__("sae_lens").__version__, "rows_per_s": []}
for repeat in range(args["repeats"]):
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=train.shape[1], d_sae=args["width"], k=args["k"]))
    cfg = SAETrainerConfig(total_training_samples=args["steps"] * args["batch"], train_batch_size_samples=args["batch"],
                           lr=args["lr"], lr_end=args["lr"], logger=LoggingConfig(log_to_wandb=False))
    trainer = SAETrainer(cfg, sae, batches())
    started = time.perf_counter()
    sae = trainer.fit()
    result["rows_per_s"].append(args["steps"] * args["batch"] / (time.perf_counter() - started))
with torch.no_grad():
    recon = sae.decode(sae.encode(held))
    result["explained_variance"] = float(1 - ((held - recon) ** 2).sum() / ((held - held.mean(0)) ** 2).sum())
    result["l0"] = float((sae.encode(held) > 0).float().sum(1).mean())
    ours = SAE.load_from_disk(args["tether_sae"])
    theirs = ours.decode(ours.encode(held))
    result["tether_sae_loaded_as"] = type(ours).__name__
    result["tether_sae_max_abs_difference"] = float((theirs - torch.load(args["tether_recon"])).abs().max())
print(json.dumps(result))
"""


def main() -> None:
    """Capture, train both, compare; print and optionally write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="world:base")
    parser.add_argument("--site", default="resid_post.1")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--saelens-python", default=os.environ.get("TETHER_SAELENS_PYTHON"),
                        help="an interpreter with sae-lens installed (default: $TETHER_SAELENS_PYTHON; none: tether "
                        "only)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from tether.interp.capture import capture
    from tether.interp.sae import SAEConfig, sae_metrics, train_sae
    from tether.interp.sites import resolve
    from tether.models.loading import ModelConfig, load_model_and_tokenizer
    from tether.world.datasets import sft_rows
    from tether.world.spec import WorldConfig, build_world

    model, tokenizer = load_model_and_tokenizer(ModelConfig(path=args.model))
    model.eval()
    site = resolve(model, args.site).site.name
    texts = [str(tokenizer.apply_chat_template(r["messages"], tokenize=False))
             for r in sft_rows(build_world(WorldConfig(seed=0)), args.texts, seed=11)]
    acts = capture(model, tokenizer, texts, [site], positions="all")[site]
    order = torch.randperm(len(acts), generator=torch.Generator().manual_seed(0))
    held_n = max(1, len(acts) // 10)
    held, train = acts[order[:held_n]].contiguous(), acts[order[held_n:]].contiguous()
    steps = max(1, int(args.epochs * len(train) / args.batch))
    cfg = SAEConfig(kind="topk", width=args.width, k=args.k, batch_size=args.batch, lr=args.lr,
                    epochs=steps * args.batch / len(train))
    speeds = []
    for _ in range(args.repeats):
        sae, log = train_sae(train, cfg, site=site)
        speeds.append(log["rows_per_s"])
    metrics = sae_metrics(sae, held)
    result: dict[str, Any] = {
        "model": args.model, "site": site, "rows": {"train": len(train), "heldout": len(held)},
        "shape": {"d_in": train.shape[1], "width": args.width, "k": args.k, "batch": args.batch, "steps": steps},
        "torch_threads": torch.get_num_threads(),
        "tether": {"rows_per_s": round(max(speeds), 1), "all_rows_per_s": speeds,
                   "explained_variance": metrics["explained_variance"], "l0": metrics["l0"]},
    }
    if args.saelens_python:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            torch.save(train, tmp_path / "train.pt")
            torch.save(held, tmp_path / "held.pt")
            sae.save(tmp_path / "sae")
            with torch.no_grad():
                torch.save(sae(held), tmp_path / "recon.pt")
            payload = {"train": str(tmp_path / "train.pt"), "held": str(tmp_path / "held.pt"), "width": args.width,
                       "k": args.k, "batch": args.batch, "steps": steps, "lr": args.lr, "repeats": args.repeats,
                       "tether_sae": str(tmp_path / "sae"), "tether_recon": str(tmp_path / "recon.pt")}
            started = time.perf_counter()
            done = subprocess.run([args.saelens_python, "-c", SAELENS, json.dumps(payload)], capture_output=True,
                                  text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"SAELens run failed:\n{done.stderr[-2000:]}")
            theirs = json.loads(done.stdout.strip().splitlines()[-1])
            theirs["wall_s"] = round(time.perf_counter() - started, 1)
        theirs["rows_per_s"] = round(max(theirs.pop("rows_per_s")), 1)
        result["saelens"] = theirs
        result["speed_ratio_tether_over_saelens"] = round(result["tether"]["rows_per_s"] / theirs["rows_per_s"], 2)
    else:
        result["saelens"] = "not run: no --saelens-python"
    emit(result, args.json)


if __name__ == "__main__":
    main()
