"""Everything that imports pytest: one plugin object per concern, wired by pytest_neuron.plugin."""
