"""Text, screens and pages: event lines, the dashboard, the replay view, the report formats."""
