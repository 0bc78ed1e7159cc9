"""Keras's files: HDF5 weights, .keras archives, npz weights, the names and configs they carry."""
