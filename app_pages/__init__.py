"""The app's pages. `app_pages.lab` holds what they share (the run store, the job runner)."""
