"""Chat: the event-sourced conversation aggregate, its events and the seam for assistant turns."""
