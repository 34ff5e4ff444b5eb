#!/usr/bin/env python
"""Seconds per training epoch: our MGCN (``Trainer.train_epoch``) against enoche/MMRec's MGCN.

    python benchmarks/bench_train_epoch.py --data ../scratch/mgcn/lfm2k --epochs 5 \\
        --reference ../peers/MMRec --threads 2 [--rounds 2] [--json out.json]

``--data`` is a tru dataset folder (``dataset.yaml`` + MMRec files). The reference (a checkout of
enoche/MMRec; ``--reference`` or env ``TRU_MMREC_PATH``) runs in a subprocess from a driver this script
writes to a temporary folder: no reference code is imported here or into the tru package. The driver
applies the compatibility shims MMRec needs on this stack (NumPy aliases, ``dok_matrix._update``,
stub ``torchvision`` / ``lmdb`` modules, a pure-torch ``torch_scatter.scatter_add``, a no-op ``Tensor.cuda``
without CUDA) and points MMRec at a temporary folder of symlinks (MMRec writes kNN caches next to its
data). Its "v" slot is the first non-text modality, its "t" slot ``text``. Without a reference only ours
runs.

Both sides use the same seed, thread count and MMRec defaults (batch 2048, lr 1e-3, one negative);
only training epochs are timed (no evaluation), in wall-clock and in process CPU seconds (the latter is
the steadier measure on a shared, loaded machine). ``--rounds`` alternates ours / reference to even out
load drift; the ratios are ours / reference on the mean seconds per epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DRIVER = r"""
import json, os, sys, time, types
import numpy as np
for _n, _t in (("float", float), ("int", int), ("bool", bool), ("object", object)):
    if _n not in np.__dict__:
        setattr(np, _n, _t)
import scipy.sparse as _sp
if not hasattr(_sp.dok_matrix, "_update"):
    def _dok_update(self, data):
        for (r, c), v in dict(data).items():
            self[r, c] = v
    _sp.dok_matrix._update = _dok_update
import torch
if not torch.cuda.is_available():
    torch.Tensor.cuda = lambda self, *a, **k: self

def _scatter_add(src, index, dim=-1, out=None, dim_size=None):
    dim = dim % src.dim()
    if dim_size is None:
        dim_size = int(index.max()) + 1 if index.numel() else 0
    if out is None:
        shape = list(src.shape); shape[dim] = dim_size
        out = torch.zeros(shape, dtype=src.dtype, device=src.device)
    return out.scatter_add_(dim, index, src)

def _stub(name, **attrs):
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod

try:
    import torch_scatter  # noqa: F401
except ImportError:
    _stub("torch_scatter", scatter_add=_scatter_add)
for _name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "lmdb"):
    try:
        __import__(_name)
    except ImportError:
        _stub(_name, pad=None, resize=None)
sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]

args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
os.chdir(os.path.join(args["reference"], "src"))
sys.path.insert(0, os.getcwd())
from utils.configurator import Config
from utils.dataloader import TrainDataLoader
from utils.dataset import RecDataset
from utils.utils import get_model, get_trainer, init_seed

config = Config("MGCN", args["name"], {
    "gpu_id": 0, "use_gpu": False, "seed": [args["seed"]], "hyper_parameters": ["seed"],
    "epochs": args["epochs"], "cl_loss": args["cl_loss"], "data_path": args["data_path"],
    "USER_ID_FIELD": "userID", "ITEM_ID_FIELD": "itemID", "TIME_FIELD": "timestamp",
    "inter_file_name": args["inter"], "vision_feature_file": args["vision"],
    "text_feature_file": args["text"],
    "field_separator": "\t", "filter_out_cod_start_users": True,
})
dataset = RecDataset(config)
str(dataset)
train_ds = dataset.split()[0]
str(train_ds)
loader = TrainDataLoader(config, train_ds, batch_size=config["train_batch_size"], shuffle=True)
config["seed"] = args["seed"]
init_seed(args["seed"])
loader.pretrain_setup()
t = time.perf_counter()
model = get_model("MGCN")(config, loader).to(config["device"])
build_s = time.perf_counter() - t
trainer = get_trainer()(config, model, False)
times, cpu_times = [], []
for epoch in range(args["epochs"]):
    t, c = time.perf_counter(), time.process_time()
    model.pre_epoch_processing()
    trainer._train_epoch(loader, epoch)
    trainer.lr_scheduler.step()
    times.append(time.perf_counter() - t)
    cpu_times.append(time.process_time() - c)
print("RESULT " + json.dumps({"build_s": build_s, "epoch_times": times, "cpu_times": cpu_times}))
"""


def _reference_inputs(data: Path) -> tuple[dict[str, Any], str | None]:
    """The reference's file names (from our manifest), or the reason it cannot run on this dataset."""
    from tru.data.dataset import DatasetManifest

    manifest = DatasetManifest.load(data)
    mods = list(manifest.modalities)
    vision = next((m for m in mods if m != "text"), None)
    if "text" not in mods or vision is None:
        return {}, f"MMRec's MGCN needs a 'text' and a non-text modality; {data} has {mods}"
    return {
        "inter": manifest.interactions,
        "text": manifest.modalities["text"].file,
        "vision": manifest.modalities[vision].file,
        "vision_modality": vision,
    }, None


def run_reference(
    reference: Path, data: Path, epochs: int, seed: int, threads: int, cl_loss: float, workdir: Path
) -> dict[str, Any]:
    """Time ``epochs`` training epochs of MMRec's MGCN in a subprocess (fresh kNN caches every call)."""
    files, why = _reference_inputs(data)
    if why:
        raise RuntimeError(why)
    name = "tru_bench"
    folder = workdir / name
    if folder.exists():
        for f in folder.iterdir():
            f.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    for key in ("inter", "text", "vision"):
        (folder / files[key]).symlink_to((data / files[key]).resolve())
    driver = workdir / "mmrec_driver.py"
    driver.write_text(DRIVER)
    args = {
        "reference": str(reference.resolve()),
        "name": name,
        "data_path": str(workdir) + "/",
        "epochs": epochs,
        "seed": seed,
        "threads": threads,
        "cl_loss": cl_loss,
        **files,
    }
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run(
        [sys.executable, str(driver), json.dumps(args)], capture_output=True, text=True, env=env
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"reference run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def run_ours(data: Path, epochs: int, seed: int, threads: int, cl_loss: float) -> dict[str, Any]:
    """Time ``epochs`` calls of ``Trainer.train_epoch`` for our MGCN (same defaults as the reference)."""
    import torch

    from tru.config import load_config
    from tru.data.dataset import load_dataset
    from tru.models import build_backbone
    from tru.train.trainer import Trainer

    torch.set_num_threads(threads)
    cfg = load_config(
        "mgcn", overrides={"seed": seed, "threads": threads, "device": "cpu", "cl_loss": cl_loss}
    )
    ds = load_dataset(data, validate=False)
    t = time.perf_counter()
    model = build_backbone("mgcn", ds, cfg)
    build_s = time.perf_counter() - t
    trainer = Trainer(model, ds, cfg, log=lambda _s: None)
    times, cpu_times = [], []
    for epoch in range(epochs):
        t, c = time.perf_counter(), time.process_time()
        trainer.train_epoch(epoch)
        times.append(time.perf_counter() - t)
        cpu_times.append(time.process_time() - c)
    return {"build_s": build_s, "epoch_times": times, "cpu_times": cpu_times}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    times = [t for r in runs for t in r["epoch_times"]]
    cpu = [t for r in runs for t in r["cpu_times"]]
    return {
        "seconds_per_epoch": statistics.fmean(times),
        "median": statistics.median(times),
        "cpu_seconds_per_epoch": statistics.fmean(cpu),
        "epoch_times": [round(t, 4) for t in times],
        "cpu_times": [round(t, 4) for t in cpu],
        "build_s": [round(r["build_s"], 3) for r in runs],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="tru dataset folder (dataset.yaml)")
    ap.add_argument("--epochs", type=int, default=3, help="timed training epochs per side and round")
    ap.add_argument("--rounds", type=int, default=1, help="alternate ours / reference this many times")
    ap.add_argument(
        "--reference",
        type=Path,
        default=os.environ.get("TRU_MMREC_PATH"),
        help="enoche/MMRec checkout (default: env TRU_MMREC_PATH)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=999)
    ap.add_argument("--cl-loss", type=float, default=0.01)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    reference = args.reference
    if reference is not None and not (Path(reference) / "src" / "models" / "mgcn.py").is_file():
        print(f"--reference {reference}: no src/models/mgcn.py there; running ours only")
        reference = None
    if reference is None:
        print("no reference checkout (--reference or TRU_MMREC_PATH): timing our MGCN only")
    else:
        _, why = _reference_inputs(args.data)
        if why:
            print(f"reference skipped: {why}")
            reference = None

    ours_runs, ref_runs = [], []
    with tempfile.TemporaryDirectory(prefix="tru-bench-") as tmp:
        for r in range(args.rounds):
            ours_runs.append(run_ours(args.data, args.epochs, args.seed, args.threads, args.cl_loss))
            print(f"round {r + 1}: ours      {statistics.fmean(ours_runs[-1]['epoch_times']):.3f} s/epoch")
            if reference is not None:
                ref_runs.append(
                    run_reference(
                        Path(reference),
                        args.data,
                        args.epochs,
                        args.seed,
                        args.threads,
                        args.cl_loss,
                        Path(tmp),
                    )
                )
                print(f"round {r + 1}: reference {statistics.fmean(ref_runs[-1]['epoch_times']):.3f} s/epoch")

    out: dict[str, Any] = {
        "data": str(args.data),
        "epochs": args.epochs,
        "rounds": args.rounds,
        "threads": args.threads,
        "ours": _summary(ours_runs),
    }
    ours = out["ours"]
    print(
        f"ours (tru MGCN):         {ours['seconds_per_epoch']:.3f} s/epoch wall, "
        f"{ours['cpu_seconds_per_epoch']:.3f} s/epoch CPU"
    )
    if ref_runs:
        ref = out["reference"] = {"path": str(reference), **_summary(ref_runs)}
        out["ratio_ours_over_reference"] = ours["seconds_per_epoch"] / ref["seconds_per_epoch"]
        out["cpu_ratio_ours_over_reference"] = ours["cpu_seconds_per_epoch"] / ref["cpu_seconds_per_epoch"]
        print(
            f"reference (MMRec MGCN):  {ref['seconds_per_epoch']:.3f} s/epoch wall, "
            f"{ref['cpu_seconds_per_epoch']:.3f} s/epoch CPU"
        )
        print(
            f"ratio ours / reference:  {out['ratio_ours_over_reference']:.3f} wall, "
            f"{out['cpu_ratio_ours_over_reference']:.3f} CPU  (goal <= 1.0, aim 0.5)"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
