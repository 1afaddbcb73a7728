"""`aero serve`: the read API for everyone downstream of the data engineers (see app.py)."""
