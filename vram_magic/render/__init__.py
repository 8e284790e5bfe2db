"""Render: turn readings into text (terminals) and HTML (notebooks). Formatting lives only here."""
