"""The training cache: MONAI's CacheDataset, with its loading threads all stopped before a bad case's error leaves."""

from __future__ import annotations

from multiprocessing.pool import ThreadPool

from monai.data import CacheDataset


class CaseCache(CacheDataset):
    """:class:`monai.data.CacheDataset` whose cache fill stops and joins its threads when one case fails to load.

    MONAI's fill leaves the other threads running the queued cases; the error then ends the process while they are
    still inside PyTorch or PIL, and the interpreter's shutdown aborts it ('terminate called without an active
    exception', exit 134) after the one-line error was printed.
    """

    def _fill_cache(self, indices=None) -> list:
        if self.cache_num <= 0:
            return []
        if indices is None:
            indices = list(range(self.cache_num))
        pool = ThreadPool(self.num_workers)
        try:
            items = pool.imap(self._load_cache_item, indices)
            if self.progress:
                from medseg.progress import track

                items = track(items, total=len(indices), desc="caching", unit="case")
            return list(items)
        finally:
            pool.terminate()  # the cases not yet started are dropped; each thread ends after the case it is on
            for worker in pool._pool:
                worker.join()
