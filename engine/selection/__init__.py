"""Selection: plain functions that pick pool positions, for choosing what to label (active learning) and,
next, which labeled examples to train on (core-sets, issue 24).

Every strategy is `strategy(pool, labeled, budget, *, rng) -> int64 [budget]` (`strategies.STRATEGIES`,
their per-item scores in `strategies.SCORES`; the names the app shows are in the torch-free
`engine.names`). Modules: `strategies` (uncertainty, random, the registry), `kcenter` (exact k-center
greedy with FAISS), `coldstart` (TypiClust, ProbCover and their hybrid on a backbone's embeddings).
"""
