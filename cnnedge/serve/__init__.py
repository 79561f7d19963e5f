"""Serving cnnedge models from other servers' processes (Triton's Python backend).

Nothing here is imported by ``cnnedge.runtime``; a module runs inside the server that loads it.
"""
