"""``zoo export``: a member or ensemble as one self-contained artifact (Keras, SavedModel, LiteRT).

:mod:`zoo.deploy.export.graph` builds the inference graph (uint8 images → final probabilities, with
resize, TTA views, prior correction and the ensemble's weights inside) from stock Keras layers
and ``keras.ops``; :mod:`zoo.deploy.export.writer` serialises it with ``signature.json`` and a card.
"""
