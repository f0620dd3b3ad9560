"""The live dashboard (`netprof`, `netprof tui`): a Textual app over the same LiveSession,
profile JSON and findings as `netprof profile`.

feed.py is the source (a worker thread sampling a LiveSession, or a saved capture),
model.py the plain data the screen shows, screens/ and widgets/ the views. docs/tui.md
describes what it shows and how it stays responsive.
"""
