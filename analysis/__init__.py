"""What analysts run on the stored articles: the ``finews`` command (search, export, report,
browse)."""
