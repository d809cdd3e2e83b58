"""Camera sources, the latest-wins hand-off and the sampler."""
