"""cossl-train: pre-train, evaluate checkpoints, list backbones, compare methods over seeds, run the demo.

Every known failure (bad config key, missing data, foreign checkpoint, NaN loss, ...) ends
with one line on stderr and exit status 2; set COSSL_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

from . import jsonio


def cmd_pretrain(args: argparse.Namespace) -> None:
    from .config import load_config
    from .trainer import pretrain

    cfg = load_config(args.config, args.overrides)
    summary = pretrain(cfg, resume=args.resume, progress=not args.no_progress)
    print(jsonio.dumps(summary, indent=2))


def _eval_checkpoint(args: argparse.Namespace, linear: bool, knn: bool) -> dict:
    from .checkpoint import load_checkpoint
    from .config import apply_overrides, from_dict
    from .evaluate import evaluate_checkpoint

    stored = from_dict(load_checkpoint(args.checkpoint)["config"])
    # data and evaluation settings may change (another data.root, say); the model may not
    cfg = apply_overrides(stored, args.overrides, sections=("data", "eval", "train"))
    return evaluate_checkpoint(args.checkpoint, cfg, linear=linear, knn=knn, progress=not args.no_progress)


def cmd_linear_probe(args: argparse.Namespace) -> None:
    from .evaluate import PROTOCOLS

    res = _eval_checkpoint(args, linear=True, knn=False)
    out = Path(args.checkpoint).with_suffix(f".linear_{res['linear_protocol']}.json")
    out.write_text(jsonio.dumps(res, indent=2))
    print(f"{PROTOCOLS[res['linear_protocol']]}: top-1 {res['linear_top1']:.2f}%  top-5 {res['linear_top5']:.2f}%  "
          f"({res['n_train']} train / {res['n_val']} val images; probe saved beside the checkpoint; {out})")


def cmd_knn(args: argparse.Namespace) -> None:
    res = _eval_checkpoint(args, linear=False, knn=True)
    out = Path(args.checkpoint).with_suffix(".knn.json")
    out.write_text(jsonio.dumps(res, indent=2))
    print(f"weighted kNN (k={res['knn_k']}): top-1 {res['knn_top1']:.2f}%  ({res['n_train']} train / "
          f"{res['n_val']} val; {out})")


def cmd_backbones(args: argparse.Namespace) -> None:
    """One line per backbone: its default stem (or the small-image one with ``--small-image``), RF,
    total stride, feature width, map side at the input size it is meant for, trunk parameters and,
    where the pool MLP is on by default, the total with it."""
    from .backbones import backbone_info, list_backbones

    print(f"{'name':<20}{'stem':<10}{'RF (px)':>8}{'stride':>8}{'features':>10}{'input':>7}{'map':>7}"
          f"{'params (M)':>12}{'+ pool MLP (M)':>16}")
    for name in list_backbones():
        info = backbone_info(name)
        if args.small_image and not info["small_image"]:
            if not info["small_image_available"]:
                continue
            info = backbone_info(name, small_image=True)
        side, params = info["feature_size"], info["params"] / 1e6
        with_mlp = f"{params + info['pool_mlp_params'] / 1e6:.2f}" if info["pool_mlp"] else "-"
        print(f"{name:<20}{info['stem']:<10}{info['rf']:>8}{info['jump']:>8}{info['num_features']:>10}"
              f"{info['input_size']:>7}{f'{side}x{side}':>7}{params:>12.2f}{with_mlp:>16}")


def cmd_demo(args: argparse.Namespace) -> None:
    from .experiments.demo import run_demo

    out = args.out or ("runs/demo" if args.preset == "demo" else f"runs/demo_{args.preset}")
    run_demo(out_dir=out, seeds=args.seeds, progress=not args.no_progress, overrides=tuple(args.overrides),
             report=not args.no_report, methods=[m.strip() for m in args.methods.split(",") if m.strip()],
             preset=args.preset)


def cmd_config(args: argparse.Namespace) -> None:
    from .config import dump_yaml, load_config

    cfg = load_config(args.config, args.overrides)
    if args.explain:
        from .config_help import explain_lines

        print("\n".join(explain_lines(cfg)))
    else:
        print(dump_yaml(cfg), end="")


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks.<name>`` of the source checkout this package runs from (benchmarks are not installed)."""
    from .errors import CosslError

    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / f"{name}.py").is_file():
        raise CosslError(f"the benchmarks live in the source checkout (benchmarks/{name}.py), not beside {root}; "
                         "run this from a clone of the repository")
    if str(root) not in sys.path:  # also what spawned benchmark processes import it by
        sys.path.insert(0, str(root))
    return importlib.import_module(f"benchmarks.{name}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cossl-train", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("pretrain", help="pre-train a model from a YAML config and dotted overrides")
    s.add_argument("--config", help="YAML file (see cossl_train/configs/)")
    s.add_argument("--resume", action="store_true", help="continue the run in train.out_dir")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("overrides", nargs="*", help="key=value, e.g. train.epochs=5 co.local_weight=0.5")
    s.set_defaults(func=cmd_pretrain)

    for name, func, helptext in (("linear-probe", cmd_linear_probe, "offline linear probe (top-1/top-5; "
                                                                     "eval.linear_protocol=fast|standard)"),
                                 ("knn", cmd_knn, "weighted kNN accuracy")):
        s = sub.add_parser(name, help=f"{helptext} of a checkpoint's frozen encoder")
        s.add_argument("checkpoint")
        s.add_argument("--no-progress", action="store_true")
        s.add_argument("overrides", nargs="*", help="data/eval overrides, e.g. data.root=/data eval.knn_k=200")
        s.set_defaults(func=func)

    s = sub.add_parser("backbones", help="list backbones with their receptive fields",
                       description="The registered backbones. Any other network is backbone.name=torchvision:NAME, "
                                   "timm:NAME or MODULE:FUNCTION, with its builder's keywords in backbone.kwargs "
                                   "(docs/training.md, 'Any backbone').")
    s.add_argument("--small-image", action="store_true", help="with the small-image ResNet stem")
    s.set_defaults(func=cmd_backbones)

    s = sub.add_parser("demo", help="the main job: SimCLR vs CO-SimCLR vs random init on the embedded data, "
                                    "3 seeds, then every analysis as one HTML report")
    s.add_argument("--out", help="output folder (default: runs/demo, or runs/demo_PRESET for another preset)")
    s.add_argument("--preset", default="demo", choices=("demo", "study"),
                   help="demo: configs/demo.yaml (default); study: configs/study.yaml, the demo's recipe with "
                        "RF29 at 32 px for 24 epochs, where the CO term meets its objective (docs/findings.md)")
    s.add_argument("--methods", default="simclr,co_simclr", help="the pair to compare (default: simclr,co_simclr; "
                                                                   "e.g. byol,co_byol)")
    s.add_argument("--seeds", type=int, default=3, help="seeds per method (default: 3)")
    s.add_argument("--no-report", action="store_true", help="the table only, no analyses")
    s.add_argument("overrides", nargs="*", help="key=value changes of the preset's config (configs/demo.yaml or "
                                                "configs/study.yaml; e.g. train.epochs=2)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_demo)

    sub.add_parser("grid", help="the Figure 3A grid (RF x c_min); see `cossl-train grid --help`", add_help=False)
    sub.add_parser("bench", help="training and data-loading throughput; see `cossl-train bench --help`",
                   add_help=False)
    sub.add_parser("compare", help="methods over several seeds, mean and std; see `cossl-train compare --help`",
                   add_help=False)

    s = sub.add_parser("config", help="print the resolved config (--explain: one line per key, with what it means)")
    s.add_argument("--config")
    s.add_argument("--explain", action="store_true", help="every key as key=value and its description")
    s.add_argument("overrides", nargs="*")
    s.set_defaults(func=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # the grid and the benchmark have their own argument parsers
    if argv and argv[0] == "grid":
        from .experiments.grid import main as grid_main

        return grid_main(argv[1:])
    if argv and argv[0] == "bench":
        from .errors import USER_ERRORS, report

        try:
            bench = load_benchmark("train_throughput")
        except USER_ERRORS as e:
            return report("cossl-train bench", e)
        return bench.main(argv[1:]) or 0
    if argv and argv[0] == "compare":
        from .experiments.compare import main as compare_main

        return compare_main(argv[1:])
    from .errors import USER_ERRORS, report

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except USER_ERRORS as e:
        return report("cossl-train", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
