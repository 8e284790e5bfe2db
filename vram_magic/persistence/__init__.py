"""Persistence of the namespace: ``%vram snapshot`` / ``restore`` / ``restart``.

save (what is saved, and why not), pickling (how: tensors streamed once per storage, notebook
functions by value, imports by name), store (the private folder, key, checksums, atomic writes),
restore (verified before anything is unpickled), pending (the mark that has a restarted kernel
restore a snapshot when vram_magic loads in it).
"""
