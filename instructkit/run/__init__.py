"""Running methods: the runner, steps, execution, batch and Ray engines, pipelines, manifests."""
