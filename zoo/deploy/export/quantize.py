"""Int8 LiteRT with a float32 front and tail: the networks run in int8; what comes before their
first convolution (the resize, the TTA views, the preprocessing) and their classifiers and
everything after them (softmax, TTA mean, prior correction, the ensemble's weighted mean) in
float32.

The front costs little next to the networks, and int8 there would only add rounding before the
first convolution quantises its input anyway.

Quantising the tail to int8 loses what the target is for. A softmax output in int8 has steps
of 1/256, so rare classes round to zero before prior correction multiplies them by up to the
inverse of their prior; close top-two classes tie. LiteRT's int8 division also refuses a
denominator whose stored int8 value is 0, which a real sum can map to (``div.cc: data[i] !=
0``). The tail is a few hundred multiply-adds per image, so it costs nothing to keep it float.

The converter calibrates once (TensorFlow's ``QuantizationDebugger``, which exposes the
calibrated model), the front and tail are found in that model's graph (the front: every op
no convolution feeds; the tail: each ``SOFTMAX``, the ``FULLY_CONNECTED`` that feeds it, and
every op downstream), and the model is quantised with those nodes denylisted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

FLOAT_OPS = ("SOFTMAX",)  # ops whose inputs' producer and whose consumers stay float32
CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D")  # the networks start with one


def _downstream(ops: list[dict], seeds: set[int]) -> set[int]:
    """``seeds`` (tensor indices) and the outputs of every op that reads them, directly or not."""
    reached = set(seeds)
    grown = True
    while grown:
        grown = False
        for op in ops:
            if any(i in reached for i in op["inputs"]) and not set(op["outputs"]) <= reached:
                reached.update(op["outputs"])
                grown = True
    return reached


def float_tail(ops: list[dict], tensor_names: dict[int, str]) -> list[str]:
    """Output tensor names of the ops to keep in float32, from LiteRT op details (``op_name``,
    ``inputs``, ``outputs``): every softmax, the fully connected layer that feeds it, and every
    op that reads their outputs, directly or not."""
    producer = {out: op for op in ops for out in op["outputs"]}
    tail: set[int] = set()
    for op in ops:
        if op["op_name"] not in FLOAT_OPS:
            continue
        tail.update(op["outputs"])
        source = producer.get(op["inputs"][0])
        if source is not None and source["op_name"] == "FULLY_CONNECTED":
            tail.update(source["outputs"])
    tail = _downstream(ops, tail)
    return sorted(tensor_names[i] for i in tail)


def float_front(ops: list[dict], tensor_names: dict[int, str]) -> list[str]:
    """Output tensor names of the ops that no convolution feeds, directly or not: what the
    graph does to the images before the networks."""
    convolved = _downstream(
        ops, {i for op in ops if op["op_name"] in CONVOLUTIONS for i in op["outputs"]}
    )
    return sorted(tensor_names[i] for op in ops for i in op["outputs"] if i not in convolved)


def int8_with_float_ends(converter, representative: Callable[[], Iterable]) -> tuple[bytes, int]:
    """The int8 flatbuffer of ``converter`` (calibrated on ``representative``) with its front
    and tail in float32; returns it and the number of nodes kept float."""
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=representative
    )
    interpreter = tf.lite.Interpreter(model_content=debugger.calibrated_model)
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    kept = sorted(set(float_front(ops, names)) | set(float_tail(ops, names)))
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=kept)
    return debugger.get_nondebug_quantized_model(), len(kept)
