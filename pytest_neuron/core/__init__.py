"""Pure logic: stdlib only, imports nothing else of the package."""
