"""What torch's modules and functions mean to the signal: which hold weights and how they are laid
out (layers.py), and what each op does to the signal (activations.py). Read by the tracers and by facts."""
