#!/usr/bin/env python3
"""Trains Augur's next-chunk LSTM on exported access traces and writes a model directory.

    train.py --out DIR [options] TRACES...

TRACES are JSON Lines exports (`augurctl trace export`, format in docs/traces.md): files, or
directories whose *.jsonl files (recursively) are read in path order. Each run becomes the
sequence of chunks it read for the first time, after a <start> token. The model directory:

    model.onnx   embedding -> LSTM -> linear: tokens int64 [batch, seq] -> logits [batch, vocab]
    vocab.json   token -> chunk digest: 0 <oov>, 1 <start>, then the N most frequent chunks
    meta.json    format version, provenance (trace files and sha256, counts), hyperparameters,
                 seed, library versions, date, input/output names and shapes, opset, file hashes
    golden.json  input token sequences and the logits expected for their top tokens
    folds/N/     with --folds K: K cross-fitting models, each a model directory trained on the
                 runs outside fold N (whole argument sets per fold); `augurctl predictor
                 train-state` and `eval` ask fold N in the model's stead on fold N's runs, so
                 the model is calibrated on runs it did not see (decision 0029)

Same traces, options and seed give byte-identical model.onnx, vocab.json and golden.json
(meta.json differs only in `created`, which SOURCE_DATE_EPOCH fixes). See README.md.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

# One BLAS thread: the same sums in the same order on every machine size (reproducible), and
# it leaves the node's other core alone. Set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import export  # noqa: E402
from lstm_numpy import Lstm  # noqa: E402

FORMAT_VERSION = 1
TRACE_VERSION = 1
OOV, START = 0, 1
SPECIAL = ["<oov>", "<start>"]
GOLDEN_TOLERANCE = 1e-3
GOLDEN_TOP = 5
# The label naming a run's arguments (record-traces.sh sets it); folds keep argument sets whole.
ARGS_LABEL = "containerd.io/snapshot/augur.args"


class TraceError(Exception):
    """An export that cannot be read; the message names the file and line."""


# ------------------------------------------------------------------------------------ traces


def trace_files(paths):
    """The *.jsonl files named by `paths` (files as given, directories searched), sorted."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*.jsonl") if q.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise TraceError(f"{p}: no such file or directory")
    if not files:
        raise TraceError(f"no *.jsonl traces in {', '.join(map(str, paths))}")
    return files


def read_runs(path):
    """Every run in one export: its image and its first accesses as (digest, t_us) in order."""
    runs, current, chunks = [], None, {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                kind = rec["type"]
                if kind == "run":
                    if rec["version"] != TRACE_VERSION:
                        raise ValueError(
                            f"trace version {rec['version']}; this trainer reads {TRACE_VERSION}"
                        )
                    current = {
                        "image": rec["image"],
                        "key": f"{rec['image']} {int(rec['started_unix_ms'])}",
                        "group": f"{rec['image']} "
                        + rec.get("labels", {}).get(ARGS_LABEL, rec.get("workload", "")),
                        "first": [],
                        "seen": set(),
                    }
                    chunks = {}
                    runs.append(current)
                elif kind == "chunk":
                    if current is None:
                        raise ValueError("a chunk line before any run line")
                    chunks[rec["id"]] = rec["digest"]
                elif kind == "access":
                    if current is None:
                        raise ValueError("an access line before any run line")
                    digest = chunks[rec["chunk"]]
                    if digest not in current["seen"]:
                        current["seen"].add(digest)
                        current["first"].append((digest, int(rec["t_us"])))
            except (KeyError, TypeError, ValueError) as e:
                raise TraceError(f"{path}: line {n}: {e!r}") from None
    for run in runs:
        del run["seen"]
    return runs


def load_traces(paths):
    """All runs of all files, and per file its path, sha256 and run count (provenance)."""
    runs, sources = [], []
    for path in trace_files(paths):
        file_runs = read_runs(path)
        sources.append(
            {"path": str(path), "sha256": sha256_file(path), "runs": len(file_runs)}
        )
        runs.extend(file_runs)
    return runs, sources


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


# ------------------------------------------------------------------------------------ vocab


def build_vocab(runs, size):
    """The `size` chunks read (first) by the most runs, ties by digest: token list and index."""
    counts = Counter(d for run in runs for d, _ in run["first"])
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]
    tokens = SPECIAL + [d for d, _ in ranked]
    return tokens, {d: i for i, d in enumerate(tokens) if i >= len(SPECIAL)}


def tokenize(run, index):
    return [START] + [index.get(d, OOV) for d, _ in run["first"]]


# ------------------------------------------------------------------------------------ data


def windows(seqs, window):
    """Training windows (inputs, targets, loss mask), each starting from a zero state.

    A run of n next-token targets is cut into windows of `window` steps, half a window apart;
    the first window counts every position (a live run is that short at first), later ones
    only the positions no earlier window counted, which have at least half a window of context
    (a live run's prediction sees a full window).
    """
    xs, ys, ms = [], [], []
    for seq in seqs:
        x, y = seq[:-1], seq[1:]
        n = len(x)
        starts = list(range(0, max(n - window, 0) + 1, max(window // 2, 1)))
        if starts[-1] + window < n:
            starts.append(n - window)
        covered = 0
        for s in starts:
            length = min(window, n - s)
            row_x = np.zeros(window, dtype=np.int64)
            row_y = np.zeros(window, dtype=np.int64)
            row_m = np.zeros(window, dtype=np.float32)
            row_x[:length] = x[s : s + length]
            row_y[:length] = y[s : s + length]
            first_new = max(covered - s, 0)
            row_m[first_new:length] = 1.0
            covered = s + length
            xs.append(row_x)
            ys.append(row_y)
            ms.append(row_m)
    return np.stack(xs), np.stack(ys), np.stack(ms)


def train(model, data, args, log):
    xs, ys, ms = data
    rng = np.random.default_rng(args.seed + 1)
    losses = []
    for epoch in range(args.epochs):
        started = time.monotonic()
        order = rng.permutation(len(xs))
        total, weight = 0.0, 0.0
        for b in range(0, len(order), args.batch):
            idx = order[b : b + args.batch]
            mask = ms[idx]
            loss, grads = model.loss_and_grads(xs[idx], ys[idx], mask)
            model.adam(grads, args.lr, args.clip)
            total += loss * float(mask.sum())
            weight += float(mask.sum())
        losses.append(total / max(weight, 1.0))
        log(f"epoch {epoch + 1}/{args.epochs}: loss {losses[-1]:.4f} ({time.monotonic() - started:.1f} s)")
    return losses


# ------------------------------------------------------------------------------------ outputs


def golden(model, seqs, tokens, window):
    """A few input sequences (start only, short, a full window, one with <oov>) and their top
    tokens' logits and probabilities, as numpy computes them."""
    inputs = []
    longest = max(seqs, key=len)
    inputs.append([START])
    inputs.append(seqs[0][: min(5, len(seqs[0]))])
    inputs.append(longest[:window])
    with_oov = list(longest[: min(window, 12)])
    with_oov[len(with_oov) // 2] = OOV
    inputs.append(with_oov)
    cases = []
    for seq in inputs:
        logits = model.logits(np.asarray([seq], dtype=np.int64))[0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argsort(-logits, kind="stable")[:GOLDEN_TOP]
        cases.append(
            {
                "tokens": [int(t) for t in seq],
                "top": [
                    {
                        "token": int(t),
                        "chunk": tokens[t],
                        "logit": round(float(logits[t]), 6),
                        "probability": round(float(probs[t]), 6),
                    }
                    for t in top
                ],
            }
        )
    return {"version": FORMAT_VERSION, "tolerance": GOLDEN_TOLERANCE, "cases": cases}, inputs


def created_at():
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
        if epoch
        else datetime.datetime.now(datetime.timezone.utc)
    )
    return moment.replace(microsecond=0).isoformat()


def libraries():
    import onnx
    import onnxruntime

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
    }


def timing(runs):
    gaps = [
        b[1] - a[1] for run in runs for a, b in zip(run["first"], run["first"][1:]) if b[1] >= a[1]
    ]
    if not gaps:
        return {"median_gap_us": 0, "mean_gap_us": 0}
    return {"median_gap_us": int(np.median(gaps)), "mean_gap_us": int(np.mean(gaps))}


def dump(obj):
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def write_dir(out, files, force):
    """Writes the files (names may hold `/`) into a temporary directory beside `out`, then
    renames it into place."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} exists and is not empty (pass --force to replace it)")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, data in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("traces", nargs="+", help="JSON Lines exports: files or directories")
    ap.add_argument("--out", required=True, help="the model directory to write")
    ap.add_argument("--vocab-size", type=int, default=4096, help="chunks in the vocabulary (default 4096)")
    ap.add_argument("--embed", type=int, default=32, help="embedding width (default 32)")
    ap.add_argument("--hidden", type=int, default=64, help="LSTM state width (default 64)")
    ap.add_argument("--window", type=int, default=32, help="steps per training window (default 32)")
    ap.add_argument("--epochs", type=int, default=20, help="passes over the data (default 20)")
    ap.add_argument("--batch", type=int, default=64, help="windows per step (default 64)")
    ap.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    ap.add_argument("--clip", type=float, default=5.0, help="gradient norm clip (default 5)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--label", default="", help="what the training traces are, for meta.json")
    ap.add_argument("--folds", type=int, default=0,
                    help="also train K cross-fitting models in folds/ (K >= 2; default none)")
    ap.add_argument("--force", action="store_true", help="replace --out if it exists")
    ap.add_argument("--quiet", action="store_true", help="print only errors")
    return ap.parse_args(argv)


def assign_folds(runs, k, seed):
    """Each run's fold, 0..k-1: argument sets (image and `augur.args` label, else workload key)
    shuffled with `seed` and dealt round-robin, so a fold's runs share no argument set with
    the runs its model trains on, as a held-out argument set does not."""
    groups = sorted({r["group"] for r in runs})
    if len(groups) < k:
        raise TraceError(f"--folds {k}: the traces hold only {len(groups)} argument sets")
    order = np.random.default_rng(seed).permutation(len(groups))
    fold = {groups[g]: i % k for i, g in enumerate(order)}
    return [fold[r["group"]] for r in runs]


def build_model(runs, sources, args, log, extra=None):
    """Trains on `runs`; the model directory's files by name. None if no run read anything."""
    tokens, index = build_vocab(runs, args.vocab_size)
    seqs = [tokenize(r, index) for r in runs if r["first"]]
    if not seqs:
        return None
    data = windows(seqs, args.window)
    first = sum(len(s) - 1 for s in seqs)
    in_vocab = sum(1 for s in seqs for t in s[1:] if t != OOV)
    log(f"{len(runs)} runs, {first} first accesses, {len(index)} chunks in the vocabulary, "
        f"{len(data[0])} windows")

    model = Lstm(len(tokens), args.embed, args.hidden, args.seed)
    losses = train(model, data, args, log)
    onnx_bytes = export.build(model).SerializeToString()
    gold, gold_inputs = golden(model, seqs, tokens, args.window)
    worst = export.check_with_onnxruntime(onnx_bytes, model, gold_inputs, GOLDEN_TOLERANCE)
    vocab = {"version": FORMAT_VERSION, "oov_token": OOV, "start_token": START, "tokens": tokens}
    files = {"model.onnx": onnx_bytes, "vocab.json": dump(vocab), "golden.json": dump(gold)}
    meta = {
        "format_version": FORMAT_VERSION,
        "model": "lstm",
        "task": "next chunk read for the first time, over first accesses of a run",
        "label": args.label,
        "created": created_at(),
        "opset": export.OPSET,
        "inputs": [{"name": export.INPUT, "type": "int64", "shape": ["batch", "seq"]}],
        "outputs": [{"name": export.OUTPUT, "type": "float32", "shape": ["batch", len(tokens)]}],
        "window": args.window,
        "vocab": {"size": len(tokens), "chunks": len(index), "oov_token": OOV, "start_token": START},
        "hyperparameters": {k: getattr(args, k) for k in
                            ("vocab_size", "embed", "hidden", "window", "epochs", "batch", "lr", "clip")},
        "seed": args.seed,
        "training": {
            "traces": sources,
            "runs": len(runs),
            "images": sorted({r["image"] for r in runs}),
            "run_keys": sorted(r["key"] for r in runs),
            "first_accesses": first,
            "in_vocabulary": round(in_vocab / max(first, 1), 6),
            "windows": int(len(data[0])),
            "loss_per_epoch": [round(x, 6) for x in losses],
        },
        "timing": timing(runs),
        "check": {"onnxruntime_max_abs_diff": worst, "tolerance": GOLDEN_TOLERANCE},
        "libraries": libraries(),
        "files": {name: "sha256:" + hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }
    meta.update(extra or {})
    files["meta.json"] = dump(meta)
    log(f"trained (loss {losses[-1]:.4f}, onnxruntime within {worst:.2g} of numpy)")
    return files


def main(argv=None):
    args = parse_args(argv)
    log = (lambda _m: None) if args.quiet else (lambda m: print(f"train: {m}", file=sys.stderr))
    if args.folds == 1 or args.folds < 0:
        print(f"train: --folds {args.folds}: give 0 (none) or at least 2", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        # Refused before training, which takes K + 1 times as long with --folds.
        print(f"train: {out} exists and is not empty (pass --force to replace it)", file=sys.stderr)
        return 2
    try:
        runs, sources = load_traces(args.traces)
        folds = assign_folds(runs, args.folds, args.seed) if args.folds else []
    except TraceError as e:
        print(f"train: {e}", file=sys.stderr)
        return 2
    files = build_model(runs, sources, args, log, {"folds": args.folds} if args.folds else None)
    if files is None:
        print("train: the traces hold no accesses", file=sys.stderr)
        return 2
    for k in range(args.folds):
        log(f"fold {k + 1} of {args.folds}: trained on the runs outside it")
        outside = [r for r, f in zip(runs, folds) if f != k]
        fold_files = build_model(outside, sources, args, log, {"fold": {"index": k + 1, "of": args.folds}})
        if fold_files is None:
            print(f"train: fold {k + 1}: the runs outside it hold no accesses", file=sys.stderr)
            return 2
        files.update({f"folds/{k + 1}/{name}": data for name, data in fold_files.items()})
    try:
        write_dir(args.out, files, args.force)
    except FileExistsError as e:
        print(f"train: {e}", file=sys.stderr)
        return 2
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
