"""The gateway's own routes, outside any API family: health, metrics and the playground."""
