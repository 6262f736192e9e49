"""python -m trainer.toyworld build | score | demo --out DIR"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m trainer.toyworld", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="pretrain the toy model (about 30 CPU minutes)")
    b.add_argument("--out", type=Path, default=None, help="diffusers folder to write (default: the shipped model)")
    b.add_argument("--work", type=Path, default=Path(".cache/toyworld-build"), help="stage results")
    from trainer.toyworld.build import BuildPlan

    for f in fields(BuildPlan):
        b.add_argument("--" + f.name.replace("_", "-"), type=int, default=f.default)
    s = sub.add_parser("score", help="sample the base world's prompts (and the concept's) and read them back")
    s.add_argument("--model", type=Path, default=None, help="model to score (default: the shipped toy model)")
    s.add_argument("--lora", type=Path, default=None, help="a kohya LoRA file to apply")
    s.add_argument("--weight", type=float, default=1.0, help="the LoRA's weight")
    s.add_argument("--repeats", type=int, default=1, help="samples per base-world prompt (168 prompts)")
    s.add_argument("--diffusers", action="store_true", help="sample with diffusers' own loader")
    d = sub.add_parser("demo", help="write the CPU demo's dataset (kohya layout) and DIR/run.json")
    d.add_argument("--out", type=Path, required=True, help="demo folder")
    d.add_argument("--model", type=Path, default=None, help="base model (default: the shipped toy model)")
    args = ap.parse_args(argv)
    if args.command == "demo":
        from trainer.toyworld import SHIPPED_MODEL
        from trainer.toyworld.demo import write_demo

        print(write_demo(args.out, args.model or SHIPPED_MODEL))
    elif args.command == "build":
        _build(args)
    elif args.command == "score":
        _score(args)


def _build(args: argparse.Namespace) -> None:
    from trainer.toyworld import SHIPPED_MODEL
    from trainer.toyworld.build import BuildPlan, build

    plan = BuildPlan(**{f.name: getattr(args, f.name) for f in fields(BuildPlan)})
    out = args.out or SHIPPED_MODEL
    if (out / "model_index.json").exists():
        raise SystemExit(f"{out} already holds a model; remove it or give another --out")
    build(out, plan, args.work, log=lambda m: print(m, flush=True))


def _score(args: argparse.Namespace) -> None:
    import json
    from dataclasses import asdict

    from trainer.toyworld import SHIPPED_MODEL
    from trainer.toyworld.generate import DiffusersSampler, ProjectSampler
    from trainer.toyworld.score import score_base, score_concept

    model = args.model or SHIPPED_MODEL
    if args.diffusers:
        sampler = DiffusersSampler(model, args.lora)
    else:
        sampler = ProjectSampler(model, args.lora, args.weight)
    result = {"model": str(model), "lora": str(args.lora) if args.lora else None,
              "base": asdict(score_base(sampler, repeats=args.repeats)), "concept": score_concept(sampler)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
