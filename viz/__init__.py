"""Plain results -> plotly figures. No torch, no streamlit."""
