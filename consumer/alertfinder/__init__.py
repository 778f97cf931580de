"""The trigger's science: the KMTNet AlertFinder rule (Kim et al. 2018).

:mod:`~consumer.alertfinder.api` is its Python face (one star, or many in CSR arrays; input
checks; the fitted line LensNet sees), :mod:`~consumer.alertfinder.kernels` the compiled
numeric kernels behind it. Pure numpy and numba: no Kafka, no logging, no state.
"""
