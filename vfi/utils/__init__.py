"""Entry-point plumbing: error reporting, config checks, panels."""
