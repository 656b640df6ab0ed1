"""Training libraries: the pure train step, the train state, input pipelines, checkpoints, the workdir lock and TensorBoard writers."""
