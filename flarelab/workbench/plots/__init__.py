"""Bokeh models of the views (shared by the notebook widgets and the standalone HTML file)."""
