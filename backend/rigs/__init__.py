"""Rig converters: ICT-FaceKit (download + convert, MIT) and BFM 2009 (import of the user's own files)."""
