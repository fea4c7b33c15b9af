"""Plain-PyTorch machine-learning package of the review tool.

Never imports Django. ``ml``, ``ml.decode``, ``ml.hashing``, ``ml.cores`` and ``ml.features``' storage
helpers do not import torch either, so the web
process can validate uploads without loading it; import the torch-backed modules
(``ml.models``, ``ml.preprocess``, ``ml.checkpoints``, ``ml.predictor``, ``ml.train``)
explicitly where they are needed.
"""
