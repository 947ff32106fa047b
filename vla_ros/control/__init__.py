"""Fixed-rate action scheduling and the safety filter: numpy only, time passed in."""
