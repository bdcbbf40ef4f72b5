"""Save a trained cross-encoder with fp16 weights (half the size; the package loads it as fp32 master
weights) and check that it still ranks like the fp32 original on a fixed probe set."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from sentence_transformers import CrossEncoder
from train_v2 import mark_fp32_load

from ce_rerank_plugins.core._probe import probe_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    source = CrossEncoder(str(args.model), device="cpu")
    pairs = probe_pairs()
    before = source.predict(pairs, activation_fn=torch.nn.Identity())
    source.half()
    source.save(str(args.out))
    mark_fp32_load(args.out)
    reloaded = CrossEncoder(str(args.out), device="cpu")  # fp32, as its config now says
    after = reloaded.predict(pairs, activation_fn=torch.nn.Identity())
    rho = float(spearmanr(before, after).statistic)
    print(f"saved {args.out}: max |logit diff| {np.max(np.abs(before - after)):.4f}, Spearman {rho:.5f}")


if __name__ == "__main__":
    main()
