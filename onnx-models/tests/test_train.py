"""Tests of the trainer: backpropagation against numerical gradients, the export against numpy
through onnxruntime, reproducibility byte for byte, the vocabulary, windows, trace reading.

    ${AUGUR_CACHE:-/var/cache/augur-tests}/venv-onnx/bin/python -m unittest discover -s onnx-models/tests

(`predictor/tests/lstm.rs` runs them as part of `cargo nextest`.)
"""

import hashlib
import json
import os
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import export  # noqa: E402
import train  # noqa: E402
from lstm_numpy import Lstm  # noqa: E402


def digest(name):
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def write_export(path, runs, args=None, started=0):
    """Writes runs (image, [chunk names]) as a JSON Lines export, with a re-read per run; the
    runs start at `started`, `started` + 1, ... ms and carry `args` as their arguments label."""
    labels = {train.ARGS_LABEL: args} if args else {}
    with open(path, "w") as f:
        for n, (image, names) in enumerate(runs):
            f.write(json.dumps({"type": "run", "version": 1, "image": image, "workload": "first8:0",
                                "started_unix_ms": started + n, "layers": [],
                                "labels": labels}) + "\n")
            ids = {}
            for t, name in enumerate(names):
                if name not in ids:
                    ids[name] = len(ids)
                    f.write(json.dumps({"type": "chunk", "id": ids[name], "digest": digest(name),
                                        "layer": 0, "size": 65536, "file": "f", "file_offset": 0}) + "\n")
                f.write(json.dumps({"type": "access", "t_us": 1000 * (t + 1), "chunk": ids[name],
                                    "offset": 0, "len": 4096, "source": "miss"}) + "\n")
            # A re-read is not a first access.
            f.write(json.dumps({"type": "access", "t_us": 1000 * (len(names) + 1), "chunk": 0,
                                "offset": 0, "len": 4096, "source": "hit"}) + "\n")


def tiny_corpus(directory):
    """Two programs, each a fixed prefix then one of two branches, three runs per branch."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    for p in range(2):
        prefix = [f"p{p}-{i}" for i in range(8)]
        for b in range(2):
            branch = [f"p{p}-b{b}-{i}" for i in range(6)]
            write_export(Path(directory) / f"p{p}b{b}.jsonl", [(f"img{p}", prefix + branch)] * 3,
                         args=f"p{p}/b{b}", started=100 * (2 * p + b))


class GradientTest(unittest.TestCase):
    def test_backprop_matches_numerical_gradients(self):
        model = Lstm(vocab=7, embed=3, hidden=4, seed=3, dtype=np.float64)
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, 7, size=(2, 5))
        targets = rng.integers(0, 7, size=(2, 5))
        mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=np.float64)
        _, grads = model.loss_and_grads(tokens, targets, mask)
        eps = 1e-6
        for name, param in model.params.items():
            for idx in [tuple(rng.integers(0, s) for s in param.shape) for _ in range(6)]:
                saved = param[idx]
                param[idx] = saved + eps
                up, _ = model.loss_and_grads(tokens, targets, mask)
                param[idx] = saved - eps
                down, _ = model.loss_and_grads(tokens, targets, mask)
                param[idx] = saved
                numeric = (up - down) / (2 * eps)
                self.assertAlmostEqual(grads[name][idx], numeric, delta=1e-6 + 1e-4 * abs(numeric),
                                       msg=f"{name}{idx}")


class ExportTest(unittest.TestCase):
    def test_onnxruntime_computes_what_numpy_does_for_any_length_and_batch(self):
        import onnxruntime as ort

        model = Lstm(vocab=11, embed=4, hidden=6, seed=5)
        onnx_bytes = export.build(model).SerializeToString()
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(1)
        for batch, seq in [(1, 1), (1, 7), (3, 4), (2, 33)]:
            tokens = rng.integers(0, 11, size=(batch, seq)).astype(np.int64)
            (got,) = session.run(["logits"], {"tokens": tokens})
            self.assertEqual(got.shape, (batch, 11))
            np.testing.assert_allclose(got, model.logits(tokens), atol=1e-5)
        worst = export.check_with_onnxruntime(onnx_bytes, model, [[1, 2, 3]], 1e-4)
        self.assertLess(worst, 1e-4)

    def test_a_graph_that_differs_from_numpy_is_refused(self):
        model = Lstm(vocab=5, embed=2, hidden=3, seed=1)
        onnx_bytes = export.build(model).SerializeToString()
        model.params["v"][0] += 1.0
        with self.assertRaisesRegex(ValueError, "does not compute the trained model"):
            export.check_with_onnxruntime(onnx_bytes, model, [[1, 2]], 1e-4)


class DataTest(unittest.TestCase):
    def test_vocab_keeps_the_most_frequent_chunks_and_breaks_ties_by_digest(self):
        runs = [{"first": [(d, 0) for d in ("c", "a", "b")]}, {"first": [("a", 0), ("z", 0)]}]
        tokens, index = train.build_vocab(runs, 2)
        self.assertEqual(tokens, ["<oov>", "<start>", "a", "b"])
        self.assertEqual(train.tokenize(runs[1], index), [1, 2, 0])

    def test_windows_count_every_target_once(self):
        for n, window in [(3, 8), (8, 8), (9, 8), (40, 8), (41, 16)]:
            seq = list(range(n + 1))
            xs, ys, ms = train.windows([seq], window)
            counted = sorted(int(y) for row_y, row_m in zip(ys, ms) for y, m in zip(row_y, row_m) if m)
            self.assertEqual(counted, list(range(1, n + 1)), f"n={n} window={window}")
            np.testing.assert_array_equal(ys[:, :-1] * ms[:, 1:], xs[:, 1:] * ms[:, 1:])

    def test_exports_are_read_as_first_accesses_and_bad_lines_are_named(self):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "t.jsonl"
            write_export(path, [("img", ["x", "y", "x", "z"]), ("img2", ["y"])])
            runs = train.read_runs(path)
            self.assertEqual([[c for c, _ in r["first"]] for r in runs],
                             [[digest("x"), digest("y"), digest("z")], [digest("y")]])
            self.assertEqual(runs[0]["first"][2][1], 4000)
            text = path.read_text().replace('"version": 1', '"version": 9', 1)
            path.write_text(text)
            with self.assertRaisesRegex(train.TraceError, r"t.jsonl: line 1: .*version 9"):
                train.read_runs(path)
            with self.assertRaisesRegex(train.TraceError, "no such file"):
                train.trace_files([d + "/none"])
            with self.assertRaisesRegex(train.TraceError, "no .*jsonl traces"):
                train.trace_files([tempfile.mkdtemp(dir=d)])


class PipelineTest(unittest.TestCase):
    ARGS = ["--epochs", "30", "--batch", "8", "--embed", "8", "--hidden", "16", "--window", "8", "--quiet"]

    def train_into(self, traces, out, *extra):
        code = train.main([str(traces), "--out", str(out), *self.ARGS, *extra])
        self.assertEqual(code, 0)
        return {p.name: p.read_bytes() for p in Path(out).iterdir() if p.is_file()}

    def test_same_traces_and_seed_give_the_same_bytes(self):
        with tempfile.TemporaryDirectory() as d:
            tiny_corpus(Path(d) / "traces")
            a = self.train_into(Path(d) / "traces", Path(d) / "a")
            b = self.train_into(Path(d) / "traces", Path(d) / "b")
            c = self.train_into(Path(d) / "traces", Path(d) / "c", "--seed", "2")
        self.assertEqual(sorted(a), ["golden.json", "meta.json", "model.onnx", "vocab.json"])
        for name in ("model.onnx", "vocab.json", "golden.json"):
            self.assertEqual(a[name], b[name], name)
        meta_a, meta_b = json.loads(a["meta.json"]), json.loads(b["meta.json"])
        meta_a.pop("created"), meta_b.pop("created")
        self.assertEqual(meta_a, meta_b)
        self.assertNotEqual(a["model.onnx"], c["model.onnx"])

    def test_model_directory_describes_itself(self):
        with tempfile.TemporaryDirectory() as d:
            tiny_corpus(Path(d) / "traces")
            os.environ["SOURCE_DATE_EPOCH"] = "1764460800"
            try:
                files = self.train_into(Path(d) / "traces", Path(d) / "m", "--label", "tiny")
            finally:
                del os.environ["SOURCE_DATE_EPOCH"]
            meta = json.loads(files["meta.json"])
            vocab = json.loads(files["vocab.json"])
            golden = json.loads(files["golden.json"])
            # A second run into the same directory is refused without --force.
            self.assertEqual(train.main([str(Path(d) / "traces"), "--out", str(Path(d) / "m"), "--quiet"]), 2)
        self.assertEqual(meta["created"], "2025-11-30T00:00:00+00:00")
        self.assertEqual((meta["format_version"], meta["opset"], meta["label"]), (1, 17, "tiny"))
        self.assertEqual(meta["vocab"]["size"], len(vocab["tokens"]))
        self.assertEqual(vocab["tokens"][:2], ["<oov>", "<start>"])
        self.assertEqual(meta["vocab"]["chunks"], 2 * 8 + 4 * 6)
        self.assertEqual(meta["outputs"], [{"name": "logits", "type": "float32", "shape": ["batch", 42]}])
        self.assertEqual(meta["training"]["runs"], 12)
        self.assertEqual(meta["training"]["images"], ["img0", "img1"])
        self.assertEqual(len(meta["training"]["traces"]), 4)
        self.assertEqual(meta["timing"]["median_gap_us"], 1000)
        for name in ("model.onnx", "vocab.json", "golden.json"):
            self.assertEqual(meta["files"][name], "sha256:" + hashlib.sha256(files[name]).hexdigest())
        self.assertEqual(len(golden["cases"]), 4)
        self.assertIn(0, golden["cases"][3]["tokens"])
        # The trained model knows the prefix: after <start> and p0-0 comes p0-1.
        self.assertGreater(golden["cases"][1]["top"][0]["probability"], 0.5)

    def test_folds_hold_out_whole_argument_sets_and_together_cover_every_run(self):
        with tempfile.TemporaryDirectory() as d:
            tiny_corpus(Path(d) / "traces")
            self.train_into(Path(d) / "traces", Path(d) / "m", "--folds", "2")
            meta = json.loads((Path(d) / "m" / "meta.json").read_bytes())
            folds = [json.loads((Path(d) / "m" / "folds" / str(k) / "meta.json").read_bytes())
                     for k in (1, 2)]
            self.assertTrue((Path(d) / "m" / "folds" / "2" / "model.onnx").is_file())
            # Fewer argument sets than folds, or one fold, is refused and says why.
            for bad in ("5", "1"):
                out = Path(d) / f"bad{bad}"
                self.assertEqual(train.main([str(Path(d) / "traces"), "--out", str(out), "--folds", bad,
                                             *self.ARGS]), 2)
                self.assertFalse(out.exists())
        every = set(meta["training"]["run_keys"])
        self.assertEqual(len(every), 12)
        self.assertEqual(meta["folds"], 2)
        held_out = [every - set(f["training"]["run_keys"]) for f in folds]
        self.assertEqual([f["fold"] for f in folds], [{"index": 1, "of": 2}, {"index": 2, "of": 2}])
        # Each run is held out by exactly one fold, and a fold holds out whole argument sets:
        # the tiny corpus's sets are three runs 0..2 ms apart, 100 ms from the next set.
        self.assertEqual(held_out[0] & held_out[1], set())
        self.assertEqual(held_out[0] | held_out[1], every)
        for out in held_out:
            sets = {int(k.split()[1]) // 100 for k in out}
            self.assertEqual(len(out), 3 * len(sets))


if __name__ == "__main__":
    unittest.main()
