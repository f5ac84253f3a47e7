"""Ensembles: combination rules over member predictions and ensemble definition files."""

from zoo.ensembles.combine import (
    COMBINE_RULES,
    Combiner,
    GreedyCombiner,
    MeanCombiner,
    PredictionSet,
    RankCombiner,
    WeightedCombiner,
    combiner_from_dict,
    make_combiner,
)
from zoo.ensembles.spec import EnsembleSpec, Selection, find_spec, load_spec, resolve_members

__all__ = [
    "COMBINE_RULES",
    "Combiner",
    "EnsembleSpec",
    "GreedyCombiner",
    "MeanCombiner",
    "PredictionSet",
    "RankCombiner",
    "WeightedCombiner",
    "Selection",
    "combiner_from_dict",
    "find_spec",
    "load_spec",
    "make_combiner",
    "resolve_members",
]
