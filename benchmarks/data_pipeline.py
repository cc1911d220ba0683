"""The data path's speed, each part measured in this one run:

1. preparing a folder of 50,000 small JPEGs (10 classes, 48x40 px) for two quadrants (small: 30 per
   class, large: 500 per class, each + 50 val + 100 test) with the real download-stage code (scan
   and hash every file once, content checks, picks, decode only the images kept, arrays, manifest,
   card), against the previous way of working: decode every file of the folder, once per quadrant.
   Both with all cores; the ratio is measured in this run;
2. prepared 32 px arrays (memory-mapped .npy) into the training loop through the
   training stages' own loaders (`transferlab.training.loaders`): images/s without and
   with the default on-the-fly augmentation, against the images/s the default model
   (small_resnet, batch 128) trains at on this CPU; loader/model > 1 means the loader
   never starves the model;
3. memory as the dataset grows 10x (N and 10 N images): a fresh process runs one
   training epoch (the loaders above feeding a linear classifier, SGD) over the
   memory-mapped arrays; peak anonymous (private) memory is sampled every 10 ms. The
   page cache that holds the mapped file is the kernel's to evict and is reported apart.
   Then, where a memory cgroup can be made (root, cgroup v1), the 10 N epoch runs again
   under a memory limit smaller than the array file (it must finish), and, as the
   control that shows the limit bites, with the array loaded into memory instead of
   mapped (it must be killed).

Usage: python benchmarks/data_pipeline.py [--jpegs 50000] [--memory-images 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap
from omegaconf import OmegaConf
from PIL import Image
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]


def make_jpegs(root: Path, total: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 48)[None, :, None]
    for c in range(classes):
        folder = root / f"class{c:02d}"
        folder.mkdir(parents=True)
        for i in range(total // classes):
            base = rng.integers(0, 255, size=3)
            pixels = base * ramp + rng.normal(0, 12, size=(40, 48, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def time_prepare(root: Path, out: Path) -> tuple[float, int]:
    """The stage's way: both quadrants from one scan of the folder, decoding only the images they keep."""
    from transferlab import download
    from transferlab.core.schema import DatasetUse
    from transferlab.datasets import prepare
    from transferlab.datasets.sources import ImageFolderSource

    cfg = OmegaConf.create({"seed": 0, "data": {"image_size": 32, "on_bad_image": "fail"}})
    source = ImageFolderSource(str(root))
    started = time.perf_counter()
    source.fetch(out)
    with prepare.worker_pool() as pool:
        scans = prepare.Scans(pool)
        for name, train in (("small_similar", 30), ("large_similar", 500)):
            plan = download.Plan(
                name, DatasetUse(dataset="folder", size="small"), {"train": train, "val": 50, "test": 100}
            )
            download.prepare_real(cfg, plan, source, out / name, pool, scans, held_out={})  # no source to guard
    return time.perf_counter() - started, len(np.load(out / "large_similar" / "y_train.npy"))


def time_decode_everything(root: Path) -> float:
    """The previous way: every file of the folder decoded (and hashed), once per quadrant that uses it."""
    from transferlab.datasets import prepare
    from transferlab.datasets.sources import ImageFolderSource

    source = ImageFolderSource(str(root))
    source.fetch(root)
    started = time.perf_counter()
    with prepare.worker_pool() as pool:
        for _ in range(2):  # small_similar and large_similar
            found = source.read("train").files
            assert found is not None, "an image folder lists its files"
            files = [str(f) for f in found]
            list(pool.imap(prepare._hash_files, prepare._chunks(files)))
            list(pool.imap(prepare._decode_files, [(chunk, 32, None) for chunk in prepare._chunks(files)]))
    return time.perf_counter() - started


def loader_rate(x, y, transform=None, batch_size: int = 128) -> float:
    from transferlab.data.arrays import ImageArrayDataset
    from transferlab.training.loaders import FitData

    data = FitData(ImageArrayDataset(x, y, transform), ImageArrayDataset(x[:10], y[:10]), batch_size, seed=0)
    seen, started = 0, time.perf_counter()
    for _images, labels in data.train_dataloader():
        seen += len(labels)
    return seen / (time.perf_counter() - started)


def model_rate(batch_size: int = 128, steps: int = 15) -> float:
    """Images/s of the default model's training step (forward, backward, optimizer) on this CPU."""
    import torch

    from transferlab.core.config import load_config
    from transferlab.training.runner import Recipe, build_module

    os.chdir(REPO)
    cfg = load_config("pretrain", [])
    module = build_module(cfg, Recipe.for_pretraining(cfg), 8, cfg.pretrain.epochs)
    module.use_channels_last()  # as the cpu trainer config does
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    images = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 8, (batch_size,))
    module.train()
    for step in range(steps + 3):
        if step == 3:
            started = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(module(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - started)


def memory_child(n: int, folder: Path, in_memory: bool = False, readahead: bool = False) -> None:
    """One epoch over n memory-mapped (or, as a control, fully loaded) images; prints peak
    private memory as JSON."""
    import torch

    from transferlab.data.arrays import ImageArrayDataset
    from transferlab.training.loaders import FitData

    written = open_memmap(folder / "x_train.npy", mode="w+", dtype=np.uint8, shape=(n, 32, 32, 3))
    rng = np.random.default_rng(0)
    for start in range(0, n, 10_000):
        written[start : start + 10_000] = rng.integers(0, 255, size=(min(10_000, n - start), 32, 32, 3), dtype=np.uint8)
    written.flush()
    del written
    y = rng.integers(0, 10, size=n)
    np.save(folder / "y_train.npy", y)
    x: np.ndarray
    if in_memory:
        x = np.load(folder / "x_train.npy")
    else:  # as the training stages open their training arrays
        from transferlab.data.arrays import load_split

        x, _ = load_split(folder, "train", random_access=not readahead)

    peak = {"anon": 0, "file": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
            peak["anon"] = max(peak["anon"], int(fields["RssAnon"].split()[0]))
            peak["file"] = max(peak["file"], int(fields["RssFile"].split()[0]))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    model = torch.nn.Linear(32 * 32 * 3, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    train = FitData(ImageArrayDataset(x, y), ImageArrayDataset(x[:10], y[:10]), 128, seed=0).train_dataloader()
    started = time.perf_counter()
    for images, labels in train:
        loss = torch.nn.functional.cross_entropy(model(images.flatten(1)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    print(
        json.dumps(
            {
                "images": n,
                "peak_anon_mb": peak["anon"] / 1024,
                "peak_file_mb": peak["file"] / 1024,
                "hwm_mb": int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024,
                "file_mb": (folder / "x_train.npy").stat().st_size / 2**20,
                "epoch_s": elapsed,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jpegs", type=int, default=50_000)
    parser.add_argument("--memory-images", type=int, default=50_000, help="N; the second run has 10 N")
    parser.add_argument("--limit-mb", type=int, default=1024, help="memory cgroup limit for the 10 N run")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--readahead", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        memory_child(args.child, Path(args.folder), args.in_memory, args.readahead)
        return
    from transferlab.data.arrays import load_split
    from transferlab.data.augmentation import build_pipeline, pipeline_config

    console = Console()
    with tempfile.TemporaryDirectory(prefix="transferlab-bench-") as tmp_name:
        tmp = Path(tmp_name)
        started = time.perf_counter()
        make_jpegs(tmp / "jpegs", args.jpegs)
        console.print(f"made {args.jpegs} JPEGs in {time.perf_counter() - started:.1f} s")
        before = time_decode_everything(tmp / "jpegs")
        after, n_train = time_prepare(tmp / "jpegs", tmp / "prepared")
        kept = 10 * (30 + 500 + 2 * (50 + 100))
        table = Table(
            title=f"1. a folder of {args.jpegs} JPEGs (48x40 -> 32 px) for two quadrants, {os.cpu_count()} CPUs"
        )
        for column in ("way", "files decoded", "seconds", "speed-up"):
            table.add_column(column, justify="right")
        table.add_row("decode every file, per quadrant (before)", f"{2 * args.jpegs:,}", f"{before:.1f}", "1.00x")
        table.add_row(
            "scan once, decode what is kept (the stage)", f"{kept:,}", f"{after:.1f}", f"{before / after:.2f}x"
        )
        console.print(table)

        x, y = load_split(tmp / "prepared" / "large_similar", "train", random_access=True)  # as the training stages do
        loader_rate(x, y)  # warm the page cache
        plain = loader_rate(x, y)
        augmented = loader_rate(x, y, build_pipeline(pipeline_config(REPO, "default"), 0))
        model = model_rate()
        table = Table(title=f"2. prepared arrays -> training loop ({n_train} images, 32 px, batch 128, memory-mapped)")
        for column in ("loader", "images/s", f"vs model (small_resnet trains at {model:.0f} images/s)"):
            table.add_column(column, justify="right")
        table.add_row("no augmentation", f"{plain:,.0f}", f"{plain / model:.1f}x")
        table.add_row("default augmentation on the fly", f"{augmented:,.0f}", f"{augmented / model:.1f}x")
        console.print(table)

    rows = [memory_run(n) for n in (args.memory_images, 10 * args.memory_images)]
    table = Table(title="3. memory over one training epoch as the dataset grows 10x (fresh process each)")
    for column in ("images", "array file MB", "peak private MB", "peak mapped-file MB", "VmHWM MB", "epoch s"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            f"{row['images']:,}",
            f"{row['file_mb']:.0f}",
            f"{row['peak_anon_mb']:.0f}",
            f"{row['peak_file_mb']:.0f}",
            f"{row['hwm_mb']:.0f}",
            f"{row['epoch_s']:.1f}",
        )
    console.print(table)
    console.print(
        f"data grew {rows[1]['file_mb'] / rows[0]['file_mb']:.1f}x, peak private memory grew "
        f"{rows[1]['peak_anon_mb'] / rows[0]['peak_anon_mb']:.2f}x"
    )

    n = 10 * args.memory_images
    try:
        limited = {
            "memory-mapped, MADV_RANDOM (as training opens it)": memory_run(n, limit_mb=args.limit_mb),
            "memory-mapped, kernel read-ahead (before the fix)": memory_run(
                n, limit_mb=args.limit_mb, readahead=True, timeout=180
            ),
            "loaded into memory (control)": memory_run(n, limit_mb=args.limit_mb, in_memory=True),
        }
    except OSError as err:
        console.print(f"memory-limit runs skipped: cannot make a memory cgroup here ({err})")
        return
    table = Table(
        title=f"3b. {n:,} images ({rows[1]['file_mb']:.0f} MB) under a {args.limit_mb} MB memory cgroup limit"
    )
    for column in ("array", "result", "peak private MB", "epoch s"):
        table.add_column(column, justify="right")
    for name, row in limited.items():
        if row.get("killed"):
            result = row["returncode"] if isinstance(row["returncode"], str) else f"killed (exit {row['returncode']})"
            table.add_row(name, result, "-", "-")
        else:
            table.add_row(name, "finished", f"{row['peak_anon_mb']:.0f}", f"{row['epoch_s']:.1f}")
    console.print(table)


def memory_cgroup(limit_mb: int) -> Path:
    """A fresh cgroup-v1 memory group under this process's own, limited to limit_mb (root only)."""
    line = next(entry for entry in Path("/proc/self/cgroup").read_text().splitlines() if ":memory:" in entry)
    group = Path("/sys/fs/cgroup/memory") / line.split(":", 2)[2].lstrip("/") / f"transferlab-bench-{os.getpid()}"
    group.mkdir()
    (group / "memory.limit_in_bytes").write_text(str(limit_mb * 2**20))
    return group


def memory_run(
    n: int, limit_mb: int | None = None, in_memory: bool = False, readahead: bool = False, timeout: float | None = None
) -> dict:
    with tempfile.TemporaryDirectory(prefix="transferlab-bench-") as tmp:
        cmd = (
            [sys.executable, __file__, "--child", str(n), "--folder", tmp]
            + (["--in-memory"] if in_memory else [])
            + (["--readahead"] if readahead else [])
        )
        group = memory_cgroup(limit_mb) if limit_mb else None
        if group:  # join the group, then exec the child: everything it maps or allocates is charged there
            cmd = ["bash", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "bash", *cmd]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"killed": True, "returncode": f"stopped after {timeout:.0f} s, not finished"}
        finally:
            if group:
                group.rmdir()
        if done.returncode != 0:
            if limit_mb:
                return {"killed": True, "returncode": done.returncode}
            raise RuntimeError(done.stderr)
        return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
