"""A third-party judge registered through the `instructkit.methods` entry point."""

from dataclasses import dataclass

from instructkit.data.io import response_of
from instructkit.registry import method
from instructkit.run.runner import merge_results


@dataclass
class WordcountOptions:
    minimum: int = 3


@method("judge", "wordcount", options=WordcountOptions, needs_model=False)
def wordcount(records, ctx):
    """Count the words of each response and flag those shorter than `minimum`."""
    opts = ctx.options or WordcountOptions()

    async def one(rec):
        n = len(response_of(rec).split())
        return {"wordcount": n, "wordcount_ok": n >= opts.minimum}

    return merge_results(records, ctx.map(records, one, stage="count"), "count")
