"""The app's pages. `pages.lab` holds what they share (the run store, the job runner)."""
