"""The ground truth and the data: the mixture, its data module, the benchmark suite."""
