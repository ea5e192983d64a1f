"""Selection: plain functions that pick positions, for choosing what to label (active learning) and which
labeled examples to train on (core-sets, issue 24), in one registry with one signature.

Every method is `method(pool, taken, budget, *, rng) -> int64 [budget]`, most worth picking first
(`strategies.STRATEGIES`, their per-item scores in `strategies.SCORES`; the names the app shows, and
which are offered for labeling, are in the torch-free `engine.names`). Modules:

- `strategies`: uncertainty (least confidence, margin, entropy), random, the registry;
- `kcenter`: exact k-center greedy with FAISS;
- `coldstart`: TypiClust, ProbCover and their hybrid on a backbone's embeddings;
- `coreset`: forgetting, EL2N and GraNd from the statistics a proxy gathers while it trains on a
  labeled set (`engine.example_stats`), and `labeled_pool`, the labeled set as a pool;
- `submodular`: facility location and graph cut, lazy greedy on a sparse similarity graph;
- `herding`: herding, the examples whose mean stays closest to the mean of all (one matrix-vector
  product per pick);
- `neighbours`: FAISS nearest neighbours and that graph (never an N x N matrix), and SEALS's candidate pool
  (the nearest neighbours of the labeled images: the setting `candidates = seals`, docs/seals.md);
- `balance`: `class_balanced(method)`, any method with its budget shared over the classes.
"""
