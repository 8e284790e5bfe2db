"""What a kernel and the Jupyter server tell each other through files, not code sent to kernels.

kernel_status: the small JSON document a kernel with vram_magic loaded keeps beside its
connection file (its memory, its largest names, a restart request), written by the kernel
(ipython/status_publisher) and only read by the server (server/handlers).
"""
