"""Front door for IPython and Jupyter kernels: the ``%vram`` magic. Parses and renders only."""
