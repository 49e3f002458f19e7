"""Command-line tools of bird-bone (``novaq``)."""
