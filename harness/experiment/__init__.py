"""The experiment pipeline: data, encoders, runs, training, evaluation and generation."""
