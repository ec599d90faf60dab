"""The Tracr world (paper Sec. 4, App. B.1, C.1, D, G): compiled RASP programs, fine-tuned.

programs (RASP + registry) -> compile (the only tracr/haiku importer) -> export
(format, cache key) -> model (export into the shared Flax transformer) ->
tasks (task registry, data) -> train (fine-tuning, reFT populations) ->
analysis (maps, pruning, controls) -> report (Table 3, figures, claims);
paper holds the paper's numbers and every claim threshold.
"""
