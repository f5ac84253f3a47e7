"""Publishing: the leaderboard's tables, plots and page."""
