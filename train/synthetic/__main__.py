"""``python -m gpt2_rlhf.train.synthetic --out DIR --seed 0``: writes the embedded dataset (``generator.main``)."""

from .generator import main

if __name__ == "__main__":
    raise SystemExit(main())
