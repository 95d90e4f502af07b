"""RL fine-tuning of language models: the shared rollout, the algorithms, reward sources, KL
control and the exact frontier of small response spaces."""
