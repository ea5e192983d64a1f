"""Jobs the worker runs for a project (`engine.worker.JOBS` maps each kind to one): each reads its
inputs from storage, trains or scores, and writes its result back in one transaction, so a stopped or
killed job leaves nothing half-written. The round, target and backbone jobs still live in
`engine.round`, `engine.target` and `engine.representation`; they move here as they are next changed.

- `coreset`: curate the labeled set (Selection via Proxy's core-set half, issue 24).
"""
