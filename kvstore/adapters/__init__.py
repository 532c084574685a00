"""Adapters that connect real inference engines to a :class:`~kvstore.CheckpointStore`.

Each adapter lives in its own module and imports its engine lazily, so
``import kvstore`` never needs an engine installed:

- :mod:`kvstore.adapters.llama_cpp` — ``llama-cpp-python`` (extra ``kvstore[llama]``).

>>> import kvstore.adapters.llama_cpp as adapter
>>> adapter.CachedLlama.__name__
'CachedLlama'
"""
