"""Plain results -> plotly figures. No torch, no streamlit."""

__all__: list[str] = []
