"""The trained numpy LSTM as an ONNX graph (opset 17), built with the `onnx` package alone.

    tokens int64 [batch, seq]
      -> Gather(embedding)            [batch, seq, E]
      -> Transpose(1, 0, 2)           [seq, batch, E]
      -> LSTM(hidden H, iofc gates)   Y_h [1, batch, H]   (the state after the last token)
      -> Squeeze(0)                   [batch, H]
      -> MatMul(out_weight) + out_bias
    logits float32 [batch, vocab]     (the next chunk's token; softmax is left to the caller)

`batch` and `seq` are dynamic. The graph is checked with onnxruntime against numpy before it is
written (check_with_onnxruntime).
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17 (ONNX 1.12); every ONNX Runtime since 1.12 reads it
INPUT = "tokens"
OUTPUT = "logits"


def build(model):
    """The ONNX ModelProto of a trained lstm_numpy.Lstm."""
    p, H, V = model.params, model.hidden, model.vocab
    # ONNX's LSTM wants W [dirs, 4H, E], R [dirs, 4H, H] and B = [Wb, Rb] [dirs, 8H].
    inits = [
        numpy_helper.from_array(p["embedding"], "embedding"),
        numpy_helper.from_array(np.ascontiguousarray(p["W"].T)[None], "lstm_W"),
        numpy_helper.from_array(np.ascontiguousarray(p["R"].T)[None], "lstm_R"),
        numpy_helper.from_array(
            np.concatenate([p["b"], np.zeros_like(p["b"])])[None], "lstm_B"
        ),
        numpy_helper.from_array(p["V"], "out_weight"),
        numpy_helper.from_array(p["v"], "out_bias"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
    ]
    nodes = [
        helper.make_node("Gather", ["embedding", INPUT], ["embedded"], axis=0),
        helper.make_node("Transpose", ["embedded"], ["time_major"], perm=[1, 0, 2]),
        helper.make_node(
            "LSTM",
            ["time_major", "lstm_W", "lstm_R", "lstm_B"],
            ["", "last_h"],
            hidden_size=H,
        ),
        helper.make_node("Squeeze", ["last_h", "axis0"], ["state"]),
        helper.make_node("MatMul", ["state", "out_weight"], ["projected"]),
        helper.make_node("Add", ["projected", "out_bias"], [OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        "augur_next_chunk_lstm",
        [helper.make_tensor_value_info(INPUT, TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", V])],
        inits,
    )
    onnx_model = helper.make_model(
        graph,
        producer_name="augur onnx-models/train.py",
        producer_version="1",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    onnx_model.ir_version = IR_VERSION
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def check_with_onnxruntime(onnx_bytes, model, sequences, tolerance):
    """Runs `sequences` through onnxruntime and numpy; returns the largest logit difference.

    Raises ValueError if it exceeds `tolerance` (the graph does not compute what was trained).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for seq in sequences:
        tokens = np.asarray([seq], dtype=np.int64)
        (got,) = session.run([OUTPUT], {INPUT: tokens})
        want = model.logits(tokens)
        worst = max(worst, float(np.abs(got - want).max()))
    if worst > tolerance:
        raise ValueError(
            f"onnxruntime's logits differ from numpy's by {worst:.3g} (tolerance {tolerance:g}): "
            "the exported graph does not compute the trained model"
        )
    return worst
