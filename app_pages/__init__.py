"""The app's pages. `app_pages.lab` holds what they share (the run store, the job runner)."""
import engine  # noqa: F401  (first, before any page loads torch: it sets OpenMP's wait policy)
