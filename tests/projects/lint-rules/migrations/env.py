"""herd lint never runs env.py: it renders each revision's upgrade() itself, offline."""
