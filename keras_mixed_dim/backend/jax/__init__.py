"""JAX-only pieces: the train step that differentiates embedding tables with
respect to the rows a batch gathered. Importing anything here imports JAX."""
