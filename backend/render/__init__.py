"""Rendering: volume rendering of the NeRF (``backend.render.volume``)."""
