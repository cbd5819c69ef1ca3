"""Data in: own-data file formats, named datasets, scaling, labels, batches, neighbours and
image transforms."""
