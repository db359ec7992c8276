"""The stages a model call passes, one module each, called in sequence by the facade (`models/llm.py`):

lookup.py    the content-addressed cache: hits, a dry run's earlier placeholders, one request for
             identical ones in flight, storing the answers
batching.py  batch collection (run/batch.py's Batch API mode): uncached chat requests recorded, not sent
ledger.py    dry run (calibrated estimates, placeholders) and the budget (reserve, book what was spent)
retry.py     TransientErrors tried again after exactly Retry-After (else backoff); per try the limits
limiting.py  the limits of one try: the user's RPM/TPM, then a concurrency slot and the provider's
             header limits (the adaptive gate of models/limits.py), or a fixed semaphore for local models
state.py     what every model of a run shares (`RunShared`: the switches, the budget, the statistics)

Each stage holds its own state, given to it when the facade builds it; none reads the facade.
"""
