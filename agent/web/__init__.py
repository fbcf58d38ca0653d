"""The web chat's files (static/: index.html, app.js, api.js, format.js, voice.js, style.css): plain HTML, CSS and
ES modules with no build step, served by `personae serve` at / (agent/server/routes/page.py).
"""
