"""Input pipelines, the train state, the pmapped training loop, checkpoints and TensorBoard writers."""
