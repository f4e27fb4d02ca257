"""Network step time: one forward + backward + optimiser step of a config's model on random tensors (no data loading).

    python benchmarks/step_time.py                                          # configs/ph2.yaml as shipped
    python benchmarks/step_time.py --set model.num_res_units=1 --set model.num_res_units=3
    python benchmarks/step_time.py --config lgg --steps 20
    python benchmarks/step_time.py --set train.amp=false                    # float32 against bfloat16 autocast
    python benchmarks/step_time.py --config lgg --set model.dropout=0.2 --set "model.dropout=0.2;model.dropout_mode=channel"

Each ``--set KEY=VALUE`` is one variant (several overrides in one variant: ``--set "A=1;B=2"``), timed against the config as shipped in the same process, so the ratio is
what to compare (this machine's speed drifts between sessions). The model, loss (with deep supervision when the
config sets it), optimiser, batch size, input size and precision (``train.amp``) are the ones `medseg train` builds
from the config; the figure isolates what a model change costs per step from the data pipeline, validation and evaluation around it.
"""

from __future__ import annotations

import argparse
import time

from _common import line


def step_seconds(
    config: str, overrides: list[str], steps: int, threads: int = 0, warmup: int = 3, seed: int = 0
) -> tuple[float, int]:
    import torch

    from medseg.config import load_config
    from medseg.engine.losses import build_loss
    from medseg.engine.train import as_float, build_optimizer
    from medseg.models import build_model, model_spec
    from medseg.runtime import amp_dtype, configure_cpu_threads, precision_name

    cfg = load_config(config, overrides)
    if cfg.data.spatial_dims != 2 or not cfg.preprocess.spatial_size:
        raise SystemExit(f"{config}: step_time.py times 2D configs with preprocess.spatial_size")
    if threads:
        torch.set_num_threads(threads)
    else:
        configure_cpu_threads(cfg.train.num_workers)  # as `medseg train` sets them
    torch.manual_seed(seed)
    net = build_model(model_spec(cfg)).train()
    loss_fn = build_loss(cfg)
    opt = build_optimizer(cfg, net.parameters())
    b, (h, w) = cfg.train.batch_size, cfg.preprocess.spatial_size
    x = torch.randn(b, cfg.in_channels, h, w)
    y = torch.randint(0, cfg.num_classes, (b, 1, h, w)).float()
    dtype = amp_dtype(torch.device("cpu"), cfg.train.amp)  # as `medseg train` autocasts (bfloat16 where native)
    times = []
    for _ in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            out = net(x)
        loss = loss_fn(as_float(out), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return sum(times[warmup:]) / steps, sum(p.numel() for p in net.parameters()), precision_name(dtype)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="ph2")
    ap.add_argument(
        "--set",
        dest="variants",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one variant per --set, overrides of one variant separated by ';' (each timed against the shipped config)",
    )
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: as `medseg train` sets them)")
    args = ap.parse_args(argv)
    base, n_base, prec = step_seconds(args.config, [], args.steps, args.threads)
    line(f"{args.config} step time, config as shipped", round(base, 4), "s/step", params=n_base, precision=prec)
    for v in args.variants:
        t, n, prec = step_seconds(args.config, [o.strip() for o in v.split(";") if o.strip()], args.steps, args.threads)
        line(
            f"{args.config} step time, {v}",
            round(t, 4),
            "s/step",
            params=n,
            precision=prec,
            ratio_to_shipped=round(t / base, 3),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
