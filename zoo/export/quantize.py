"""Int8 LiteRT with a float32 tail: the networks run in int8, their classifiers and everything
after them (softmax, TTA mean, prior correction, the ensemble's weighted mean) in float32.

Quantising the tail to int8 loses what the target is for. A softmax output in int8 has steps
of 1/256, so rare classes round to zero before prior correction multiplies them by up to the
inverse of their prior; close top-two classes tie. LiteRT's int8 division also refuses a
denominator whose stored int8 value is 0, which a real sum can map to (``div.cc: data[i] !=
0``). The tail is a few hundred multiply-adds per image, so it costs nothing to keep it float.

The converter calibrates once (TensorFlow's ``QuantizationDebugger``, which exposes the
calibrated model), the tail is found in that model's graph (each ``SOFTMAX``, the
``FULLY_CONNECTED`` that feeds it, and every op downstream), and the model is quantised with
those nodes denylisted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

FLOAT_OPS = ("SOFTMAX",)  # ops whose inputs' producer and whose consumers stay float32


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
    grown = True
    while grown:
        grown = False
        for op in ops:
            if any(i in tail for i in op["inputs"]) and not set(op["outputs"]) <= tail:
                tail.update(op["outputs"])
                grown = True
    return sorted(tensor_names[i] for i in tail)


def int8_with_float_tail(converter, representative: Callable[[], Iterable]) -> tuple[bytes, int]:
    """The int8 flatbuffer of ``converter`` (calibrated on ``representative``) with its tail in
    float32; returns it and the number of tail nodes kept float."""
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=representative
    )
    interpreter = tf.lite.Interpreter(model_content=debugger.calibrated_model)
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    tail = float_tail(interpreter._get_ops_details(), names)
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=tail)
    return debugger.get_nondebug_quantized_model(), len(tail)
