"""The network and its uses once trained: GMVAENet, its densities, batched inference and the
saved model folder."""
