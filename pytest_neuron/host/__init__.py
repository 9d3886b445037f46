"""Reading the machine: Neuron device detection, /proc, the parent watchdog, environment patching."""
