"""The toy world: a synthetic image world drawn in code, a tiny SD1 model pretrained on it (shipped in
model/), a scorer that reads images back, and the CPU demo that teaches the model a held-out concept.

    python -m trainer.toyworld build            # pretrain the model (seeded, fixed steps)
    python -m trainer.toyworld score            # how well the model follows its prompts
    python -m trainer.toyworld demo --out DIR   # the demo dataset and DIR/run.json
"""

from pathlib import Path

SHIPPED_MODEL = Path(__file__).parent / "model"
