"""The status page's static files (index.html, ES modules, CSS), served by api/ui_feed.py: no Python here."""
